// The pool's implementation: its state in one place, with the lock that guards each part, and
// the operations on it, defined by concern:
//   dispatch.cpp     submit, schedule (which worker gets which task), settle results
//   supervision.cpp  one supervisor thread per worker: start it, read and route its results,
//                    reap it, restart it
//   rebalance.cpp    take back tasks a busy worker holds unstarted while another is idle
//   cancel.cpp       cancel tasks that have not started: async_result::cancel(),
//                    close(mp::cancel_pending)
//   lifecycle.cpp    start the pool; close, join, terminate, and what ~pool does
// src/core/pool/pool.cpp (the public mp::pool) only forwards here.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <multiproc/pool.hpp>

#include "../../os/channel.hpp"
#include "../../os/child.hpp"
#include "../../os/shared_block.hpp"
#include "../protocol/call.hpp"
#include "../protocol/frame.hpp"
#include "../protocol/ledger.hpp"
#include "../protocol/result.hpp"
#include "../protocol/task.hpp"
#include "result_state.hpp"

namespace multiproc::detail {

/// One submitted call (a task, or one chunk of a map), from submission until its outcome.
struct task {
  /// Tells the tickets of what its arguments carry that the task is back in the queue.
  void returned() {
    for (auto& t : tickets)
      t->returned();
  }
  std::uint64_t id = 0;
  std::uint64_t number = 0;  ///< its place among the tasks sent to its worker (ledger.hpp)
  /// Its place in the pool's pending queue, which is always in increasing key order (see
  /// pool_impl::pending_): found by binary search when it is cancelled.
  std::int64_t queue_key = 0;
  /// Cancelled while queued: an empty husk (no state, body or handles) that dispatch drops.
  bool cancelled = false;
  std::shared_ptr<result_state> state;
  std::size_t part = 0;    ///< which part of `state` it settles
  std::string body;        ///< the encoded call, when small
  os::shared_block block;  ///< the encoded call, when large
  std::size_t block_size = 0;
  std::size_t encoded_bytes = 0;  ///< body or block: what waits in memory until a worker has it
  handle_list handles;            ///< what its arguments carry: sent with it, kept until it ends
  ticket_list tickets;            ///< theirs (see travel_ticket): the task counts while it lives
  std::size_t wire_size() const { return task_wire_size(body.size(), static_cast<bool>(block)); }
};

/// An outcome to record in its state; recorded outside the pool's lock.
struct settlement {
  std::shared_ptr<result_state> state;
  std::size_t part = 0;
  result_payload result;
  bool cancelled = false;  ///< the outcome is the part's cancellation
};

/// One worker process and what the pool knows of it. Every field is guarded by the pool's
/// mutex_, except `thread` (pool_impl::threads_mutex_), `in_flight_count` (atomic), and
/// `child`/`channel`, which only the slot's supervisor replaces, while holding mutex_.
struct worker_slot {
  os::child child;
  os::channel channel;
  std::deque<task> in_flight;  ///< sent to this worker, oldest (the running one) first
  std::size_t in_flight_bytes = 0;
  std::size_t budget = 0;  ///< in-flight bytes its pipe takes without blocking a writer
  std::size_t tasks_sent = 0;
  bool accepting = false;  ///< started, not stopping: tasks may be sent
  /// This worker's claim word (which tasks it started), once the pool gave it one: when it
  /// first held two tasks (rebalance.cpp). Unset for a new worker.
  std::optional<claim_word> ledger;
  /// Where its word is in the pool's ledger block: fixed at the pool's start.
  std::size_t ledger_offset = 0;
  /// Its word could not be passed to it: it holds one task at a time until replaced.
  bool ledger_refused = false;
  /// Tasks it holds toward maxtasksperchild (sent, less those taken back); reaching the limit
  /// it takes no more, and gets its stop frame once it has answered them all.
  std::size_t tasks_kept = 0;
  bool retiring = false;
  /// Tasks taken back (rebalance.cpp) whose frames the worker has yet to answer with skipped;
  /// while there are some, the worker is held: it gets nothing new.
  std::size_t taken_back = 0;
  bool ready_seen = false;
  int failed_starts = 0;    ///< starts in a row that never became ready
  os::process_stamp stamp;  ///< the worker's, for the tickets of tasks delivered to it
  std::string outbox;       ///< frames to write at the next flush
  /// POSIX: descriptors the outbox's frames carry, written with it (kept open by their tasks,
  /// or by the pool's ledger block).
  std::vector<os::native_handle> outbox_attached;
  std::thread thread;  ///< its supervisor
  /// in_flight.size(), readable without the mutex (by the supervisor's brief watch).
  std::atomic<std::size_t> in_flight_count{0};
};

class pool_impl : public std::enable_shared_from_this<pool_impl> {
 public:
  /// Starts the supervisors and waits until every slot has started a worker (or the pool gave
  /// up). Throws std::invalid_argument, start_error, or the initializer's failure.
  static std::shared_ptr<pool_impl> start(const pool_options& options);
  ~pool_impl();
  pool_impl(const pool_impl&) = delete;
  pool_impl& operator=(const pool_impl&) = delete;

  // ---- dispatch.cpp --------------------------------------------------------------------------
  /// Encodes and queues `count` calls as the parts of one result. `paced` (a map the caller
  /// waits for anyway): past waiting_budget of encoded parts waiting for a worker, the rest
  /// is encoded only as workers take parts, so a huge map is not held twice. `items` and
  /// `chunk_items`: as result_state's (a map's items and chunk size; 0 and 1 otherwise).
  std::shared_ptr<result_state> submit(const call_spec* calls, std::size_t count, bool paced,
                                       std::size_t items = 0, std::size_t chunk_items = 1);

  // ---- cancel.cpp ----------------------------------------------------------------------------
  /// Cancels the parts of `state` that have not started: those queued here, and those sent to
  /// a worker that has not claimed them (taken back through its claim ledger). True if the
  /// state is cancelled (now or before).
  bool cancel(result_state& state);
  /// close(), then cancels every task that has not started (as cancel() does, for all of
  /// them), and the parts a paced map has yet to queue. Returns the number of parts cancelled.
  std::size_t close_cancelling_pending();

  // ---- lifecycle.cpp -------------------------------------------------------------------------
  void close();
  void join();
  void terminate();
  /// What ~pool does: close + join unless terminated (terminate if the join fails); inside one
  /// of the pool's own callbacks, close and let the supervisors finish by themselves.
  void release_by_owner() noexcept;
  /// False in a forked copy of the owning process: its workers are not ours.
  bool owned_by_this_process() const noexcept;
  std::size_t size() const noexcept { return slots_.size(); }

 private:
  pool_impl() = default;
  enum class phase { running, closed, terminating };

  // dispatch.cpp
  std::size_t encode_part(const call_spec* calls, std::size_t part,
                          const std::shared_ptr<result_state>& state, task& t);
  void submit_the_rest(const call_spec* calls, std::size_t count, std::size_t next,
                       const std::shared_ptr<result_state>& state,
                       std::unique_lock<std::mutex>& lock);
  void queue_locked(task t);
  void requeue_front_locked(task t);
  void check_accepting_locked() const;
  std::size_t depth_limit_locked() const;
  void dispatch_locked();
  void send_task_locked(worker_slot& slot, task t);
  void append_stop_locked(worker_slot& slot);
  void flush_outbox_locked(worker_slot& slot);
  void fail_later_locked(task t, std::exception_ptr error);
  void settle_deferred(std::unique_lock<std::mutex>& lock);
  void settle_all(std::vector<settlement>& batch);
  void request_stop_locked();
  void stop_idle_workers_locked();
  void break_locked(std::exception_ptr error);
  void fail_everything_locked(const std::exception_ptr& error);
  void record_task_time_locked(std::uint32_t elapsed_us);

  // rebalance.cpp
  void rebalance();
  bool stranded_locked() const;
  void note_stranding_locked();
  void take_back_locked(worker_slot& slot);
  bool give_ledger_locked(worker_slot& slot);
  void skipped_locked(worker_slot& slot);
  std::chrono::microseconds stranding_bound_locked() const;

  // cancel.cpp
  void cancel_queued_locked(task& t);
  void drop_cancelled_locked();

  // supervision.cpp
  void supervise(worker_slot& slot);
  void start_worker(worker_slot& slot, std::unique_lock<std::mutex>& lock);
  void read_results(worker_slot& slot);
  void watch_briefly(worker_slot& slot, bool answered_a_waiter);
  void route(worker_slot& slot, std::vector<settlement>& batch, std::vector<std::uint64_t>& ids,
             std::vector<std::uint32_t>& elapsed, std::string& releases);
  void finish_worker(worker_slot& slot, std::unique_lock<std::mutex>& lock);

  // lifecycle.cpp
  void join_threads();
  bool on_own_supervisor() const noexcept;
  std::size_t other_live_threads_locked() const noexcept;

  // ---- fixed once started: read without a lock -------------------------------------------------
  pool_options options_;
  start_method method_ = start_method::spawn;
  /// The workers are on other hosts (start_method::mpi): payloads travel inline, never in
  /// shared blocks, and no handle travels (no claim ledger either).
  bool remote_workers_ = false;
  long creator_ = 0;
  /// The vector never changes after start(); each slot's fields are guarded as worker_slot says.
  std::vector<std::unique_ptr<worker_slot>> slots_;

  // ---- guarded by mutex_ -----------------------------------------------------------------------
  mutable std::mutex mutex_;
  /// Notified on every change someone may wait for: a worker started or ended, a part left the
  /// queue, outstanding_ reached zero, the phase changed.
  std::condition_variable changed_;
  phase phase_ = phase::running;
  bool stop_requested_ = false;  ///< join() or ~pool asked: stop the workers once idle
  /// Submitted, not yet with a worker. Only pushed at either end (each push takes the next
  /// key at that end), popped at either end or compacted, so its queue keys always increase.
  std::deque<task> pending_;
  std::int64_t front_key_ = 0;        ///< the key of the last task pushed at the front
  std::int64_t back_key_ = 0;         ///< the key of the last task pushed at the back
  std::size_t cancelled_queued_ = 0;  ///< husks (cancelled tasks) in pending_
  bool cancelling_pending_ = false;   ///< close(cancel_pending): paced parts left are cancelled
  std::uint64_t next_id_ = 1;
  std::size_t outstanding_ = 0;       ///< parts submitted and not yet settled
  std::exception_ptr broken_;         ///< why the pool broke, if it did
  double average_task_us_ = -1;       ///< moving average of task times; -1 until one is measured
  std::size_t live_threads_ = 0;      ///< supervisors still running
  int paced_submitters_ = 0;          ///< submit_the_rest() callers waiting for parts to leave
  std::vector<settlement> deferred_;  ///< failures found under the lock, settled after it
  /// The workers' claim words, ledger_stride bytes each, created when a worker first holds two
  /// tasks; released once the pool's threads are joined.
  os::shared_block ledger_;
  /// No ledger can be had here (no shared blocks, or one could not be made or shared): each
  /// worker then holds one task at a time, so nothing sent ever needs taking back.
  bool ledger_unavailable_ = false;
  /// Since when an idle worker has watched another hold tasks it has not started (unset: not
  /// now). The rebalancer takes them back once this is older than stranding_bound_locked().
  std::optional<std::chrono::steady_clock::time_point> stranded_since_;

  // ---- atomic ----------------------------------------------------------------------------------
  /// How long a supervisor may watch its channel for an answer before it blocks (µs).
  std::atomic<int> watch_us_{0};

  // ---- guarded by threads_mutex_ ---------------------------------------------------------------
  /// Held while joining supervisors (worker_slot::thread) and the rebalancer, by whichever
  /// thread joins them.
  std::mutex threads_mutex_;
  /// Started the first time tasks are stranded; joined with the supervisors. Created under
  /// mutex_, joined under threads_mutex_.
  std::thread rebalancer_;
  /// What the rebalancer sleeps on (with mutex_): tasks became stranded, or the pool is
  /// ending. Not changed_, which every settled result notifies: that would wake it per task.
  std::condition_variable rebalance_;
};

}  // namespace multiproc::detail
