// mp::pool: the scheduler, the per-worker supervisor threads and result routing.
//
// Each worker slot has one supervisor thread that starts the worker, reads its results, and
// restarts it when it dies. Tasks are written to a worker's channel by whichever thread makes
// room for them (the submitter, or a supervisor that just got results), under the pool's
// mutex; the bytes in flight to a worker stay below what its pipe holds, so such a write
// never blocks on a worker that is itself blocked writing results.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <multiproc/pool.hpp>
#include <multiproc/this_process.hpp>

#include "runtime.hpp"

namespace multiproc::detail {

// ---- result states --------------------------------------------------------------------------

class result_state {
 public:
  explicit result_state(std::size_t parts, const void* owner = nullptr)
      : owner_(owner), parts_(parts), remaining_(parts) {}

  /// The pool whose supervisors settle this state.
  const void* owner() const noexcept { return owner_; }

  /// Encoded bytes of this state's parts still queued in the pool (not yet with a worker);
  /// guarded by the pool's mutex.
  std::size_t waiting_bytes = 0;

  struct part {
    std::string bytes;
    os::shared_block block;
    std::size_t block_size = 0;
    std::exception_ptr error;
    bool settled = false;
  };

  /// Records the outcome of one part; returns the callbacks to run if that completed the
  /// state (run them outside every lock).
  std::vector<std::function<void()>> settle(std::size_t index, std::string bytes,
                                            os::shared_block block, std::size_t block_size,
                                            std::exception_ptr error) {
    std::vector<std::function<void()>> to_run;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      part& p = parts_[index];
      if (p.settled) return to_run;
      p.settled = true;
      p.bytes = std::move(bytes);
      p.block = std::move(block);
      p.block_size = block_size;
      p.error = std::move(error);
      if (--remaining_ != 0) return to_run;
      to_run.swap(callbacks_);
    }
    // Notified after the mutex is released: a waiter woken under it would at once block on
    // it again (one more context switch per result). The caller holds a reference to this
    // state, so it outlives the notification.
    done_.notify_all();
    return to_run;
  }

  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return remaining_ == 0; });
  }
  bool wait_for(std::chrono::nanoseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    return done_.wait_for(lock, timeout, [&] { return remaining_ == 0; });
  }
  bool ready() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return remaining_ == 0;
  }
  std::exception_ptr first_error() const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& p : parts_) {
      if (p.error) return p.error;
    }
    return nullptr;
  }
  std::size_t parts() const { return parts_.size(); }
  /// Valid once ready: parts never change after settling.
  const part& at(std::size_t index) const { return parts_[index]; }

  void then(std::function<void()> callback) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (remaining_ != 0) {
        callbacks_.push_back(std::move(callback));
        return;
      }
    }
    callback();
  }

 private:
  const void* const owner_;
  mutable std::mutex mutex_;
  std::condition_variable done_;
  std::vector<part> parts_;
  std::size_t remaining_;
  std::vector<std::function<void()>> callbacks_;
};

namespace {

/// The pool whose supervisor this thread is, if any: user code runs on it only in callbacks.
thread_local const void* supervised_pool = nullptr;

/// A callback that waits, without a deadline, for a result its own pool has not settled yet
/// could wait forever: its thread is the one that reads results (of its worker, maybe the
/// very one awaited). Python deadlocks there; this says so instead.
void refuse_to_wait_forever_in_a_callback(const result_state& state) {
  if (supervised_pool == nullptr || state.owner() != supervised_pool || state.ready()) return;
  throw state_error(
      "async_result: waiting without a deadline, inside a callback of the same pool, for a "
      "result that is not ready would deadlock (the callback runs on the thread that reads "
      "results); chain another then() instead, or wait outside the callback");
}

}  // namespace

namespace {
/// Threads blocked waiting for a result, in any pool: while there are some, a supervisor
/// whose worker is about to answer a short task watches for the answer instead of sleeping.
std::atomic<int> blocked_waiters{0};

struct counted_as_blocked {
  counted_as_blocked() { blocked_waiters.fetch_add(1, std::memory_order_relaxed); }
  ~counted_as_blocked() { blocked_waiters.fetch_sub(1, std::memory_order_relaxed); }
  counted_as_blocked(const counted_as_blocked&) = delete;
  counted_as_blocked& operator=(const counted_as_blocked&) = delete;
};
}  // namespace

void state_wait(result_state& state) {
  refuse_to_wait_forever_in_a_callback(state);
  if (state.ready()) return;
  const counted_as_blocked counted;
  state.wait();
}
bool state_wait_for(result_state& state, std::chrono::nanoseconds timeout) {
  if (timeout >= no_deadline_beyond) {
    state_wait(state);
    return true;
  }
  if (state.ready()) return true;
  const counted_as_blocked counted;
  return state.wait_for(timeout);
}
bool state_ready(const result_state& state) noexcept {
  return state.ready();
}
bool state_successful(const result_state& state) {
  if (!state.ready()) throw state_error("async_result::successful: the result is not ready");
  return state.first_error() == nullptr;
}
void state_rethrow(const result_state& state) {
  if (auto error = state.first_error()) std::rethrow_exception(error);
}
std::size_t state_parts(const result_state& state) noexcept {
  return state.parts();
}
void state_decode(const result_state& state, std::size_t index,
                  void (*reader)(std::istream& in, void* out), void* out) {
  const auto& p = state.at(index);
  const char* data = p.block ? p.block.data() : p.bytes.data();
  const std::size_t size = p.block ? p.block_size : p.bytes.size();
  try {
    reader(memory_input(data, size), out);
  } catch (const std::exception& e) {
    throw serialization_error(serialization_error::phase::decode_result, e.what());
  }
}
void state_then(result_state& state, std::function<void()> callback) {
  state.then(std::move(callback));
}

namespace {

void run_callbacks(std::vector<std::function<void()>>& callbacks) {
  for (auto& callback : callbacks)
    callback();  // async_result::then guards each one
}

// ---- the pool ---------------------------------------------------------------------------------

/// In-flight bytes per worker: at most this, and at most half of what its pipe holds (a user
/// over the kernel's pipe quota gets small pipes), so a write never waits for the worker.
constexpr std::size_t in_flight_budget = 48 * 1024;
/// Starts of one slot that fail in a row (or die before they are ready) before the pool
/// gives up: no respawn storm.
constexpr int start_attempts = 3;

struct task {
  std::uint64_t id = 0;
  std::shared_ptr<result_state> state;
  std::size_t part = 0;
  std::string body;
  os::shared_block block;
  std::size_t block_size = 0;
  std::size_t encoded_bytes = 0;  // body or block: what waits in memory until a worker has it
  std::size_t wire_size() const { return sizeof(frame_header) + (block ? 16 : body.size()); }
};

struct settlement {
  std::shared_ptr<result_state> state;
  std::size_t part;
  std::string bytes;
  os::shared_block block;
  std::size_t block_size = 0;
  std::exception_ptr error;
};

struct worker_slot {
  std::size_t index = 0;
  os::child child;
  os::channel channel;
  std::deque<task> in_flight;
  std::size_t in_flight_bytes = 0;
  std::size_t budget = 0;  // in-flight bytes this worker's pipe takes without blocking
  std::size_t tasks_sent = 0;
  bool accepting = false;
  bool ready_seen = false;
  bool stop_sent = false;
  int failed_starts = 0;
  std::string outbox;
  std::thread thread;
  /// in_flight.size(), readable without the pool's mutex (by the supervisor's brief watch).
  std::atomic<std::size_t> in_flight_count{0};
};

}  // namespace

struct pool_impl {
  pool_options options;
  start_method method = start_method::spawn;
  long creator = 0;

  std::mutex mutex;
  std::condition_variable changed;
  enum class phase { running, closed, terminating } phase = phase::running;
  bool stop_requested = false;
  std::deque<task> pending;
  std::vector<std::unique_ptr<worker_slot>> slots;
  std::uint64_t next_id = 1;
  std::size_t outstanding = 0;
  std::exception_ptr broken;
  double average_task_us = -1;
  std::size_t live_threads = 0;
  int paced_submitters = 0;  // submit_the_rest() callers waiting for parts to be dispatched
  std::mutex threads_mutex;

  ~pool_impl() {
    // The last reference can go at the end of a supervisor's own thread: that one cannot be
    // joined from itself, and is about to end anyway.
    for (auto& s : slots) {
      if (s->thread.joinable() && s->thread.get_id() == std::this_thread::get_id()) {
        s->thread.detach();
      }
    }
    join_threads();
  }

  // -- submission --------------------------------------------------------------------------

  /// Encodes and queues `count` calls as the parts of one result. `paced` (a map the caller
  /// waits for anyway): once the encoded parts waiting for a worker pass waiting_budget, the
  /// rest is encoded only as workers take parts, so a huge map is not held twice.
  std::shared_ptr<result_state> submit(const call_spec* calls, std::size_t count,
                                       bool paced = false) {
    auto state = std::make_shared<result_state>(count, this);
    if (count == 0) {
      // Nothing to run, but a closed or broken pool still says so, as Python's does.
      std::lock_guard<std::mutex> lock(mutex);
      check_accepting_locked();
      return state;
    }
    // Up front, as many parts as fit the budget (all of them unless paced): an error here
    // throws with nothing submitted.
    // Not inside one of this pool's callbacks: waiting there for parts to be dispatched could
    // wait for this very thread.
    paced = paced && !on_own_supervisor();
    std::vector<task> tasks;
    tasks.reserve(paced ? std::min<std::size_t>(count, 64) : count);
    std::size_t encoded = 0;
    while (tasks.size() < count && (!paced || encoded <= waiting_budget)) {
      const std::size_t part = tasks.size();
      task& t = tasks.emplace_back();
      encoded += encode_part(calls, part, state, t);
    }
    std::unique_lock<std::mutex> lock(mutex);
    check_accepting_locked();
    for (auto& t : tasks) {
      t.id = next_id++;
      state->waiting_bytes += t.encoded_bytes;
      pending.push_back(std::move(t));
    }
    // Every part counts from now, queued or not: join() waits for all of them.
    outstanding += count;
    dispatch_locked();
    settle_deferred(lock);
    if (tasks.size() < count) submit_the_rest(calls, count, tasks.size(), state, lock);
    return state;
  }

  /// Encoded bytes of one paced submission that may wait for a worker.
  static constexpr std::size_t waiting_budget = std::size_t{64} << 20;

  std::size_t encode_part(const call_spec* calls, std::size_t part,
                          const std::shared_ptr<result_state>& state, task& t) {
    t.state = state;
    t.part = part;
    encode_call_body(calls[part], t.body, 0, true, t.block, t.block_size);
    t.encoded_bytes = t.block ? t.block_size : t.body.size();
    return t.encoded_bytes;
  }

  /// The paced rest of submit(), with the lock held: waits while the state's waiting parts
  /// exceed the budget, then encodes (without the lock) and queues the next part. The parts
  /// already count as outstanding, so a close() meanwhile does not stop them; if encoding
  /// fails, or the pool is terminated or broken, the parts not queued fail with that error
  /// (map()'s get() then throws the first failed part's error, in input order).
  void submit_the_rest(const call_spec* calls, std::size_t count, std::size_t next,
                       const std::shared_ptr<result_state>& state,
                       std::unique_lock<std::mutex>& lock) {
    std::exception_ptr failure;
    while (next < count) {
      ++paced_submitters;
      changed.wait(lock, [&] {
        return state->waiting_bytes <= waiting_budget || phase == phase::terminating || broken;
      });
      --paced_submitters;
      if (phase == phase::terminating || broken) {
        failure = broken ? broken
                         : std::make_exception_ptr(state_error(
                               "pool: the task was cancelled because the pool was terminated"));
        break;
      }
      lock.unlock();
      task t;
      try {
        encode_part(calls, next, state, t);
      } catch (...) {
        failure = std::current_exception();
      }
      lock.lock();
      if (!failure && (phase == phase::terminating || broken)) {
        // Terminated or broken while this part was being encoded: everything queued has been
        // failed already, and this part must not wait in the queue for a worker that never
        // comes.
        failure = broken ? broken
                         : std::make_exception_ptr(state_error(
                               "pool: the task was cancelled because the pool was terminated"));
      }
      if (failure) break;
      t.id = next_id++;
      state->waiting_bytes += t.encoded_bytes;
      pending.push_back(std::move(t));
      ++next;
      dispatch_locked();
      settle_deferred(lock);
    }
    if (next == count) return;
    for (; next < count; ++next)
      deferred.push_back({state, next, {}, {}, 0, failure});
    settle_deferred(lock);
  }

  void check_accepting_locked() {
    if (phase == phase::terminating) throw state_error("pool: submit after terminate()");
    if (phase == phase::closed) throw state_error("pool: submit after close()");
    if (broken) std::rethrow_exception(broken);
  }

  // -- scheduling ------------------------------------------------------------------------------

  /// How many tasks a worker may hold: one at a time while tasks are long or unknown (so the
  /// next task goes to whichever worker frees first, as in Python); two for medium tasks (the
  /// worker never waits for the parent's round trip); many for tiny tasks (one wake-up serves
  /// a batch).
  std::size_t depth_limit() const {
    if (average_task_us < 0 || average_task_us >= 10000) return 1;
    if (average_task_us >= 100) return 2;
    return std::min<std::size_t>(
        64, 2 + static_cast<std::size_t>(400 / std::max(average_task_us, 1.0)));
  }

  void dispatch_locked() {
    const std::size_t depth = depth_limit();
    while (!pending.empty()) {
      worker_slot* best = nullptr;
      const std::size_t size = pending.front().wire_size();
      for (auto& s : slots) {
        if (!s->accepting || s->in_flight.size() >= depth) continue;
        if (!s->in_flight.empty() && s->in_flight_bytes + size > s->budget) continue;
        if (best == nullptr || s->in_flight.size() < best->in_flight.size()) best = s.get();
      }
      if (best == nullptr) break;
      task t = std::move(pending.front());
      pending.pop_front();
      queue_task_locked(*best, std::move(t));
    }
    for (auto& s : slots)
      flush_outbox_locked(*s);
    if (paced_submitters != 0) changed.notify_all();
  }

  void queue_task_locked(worker_slot& slot, task t) {
    t.state->waiting_bytes -= t.encoded_bytes;  // it leaves the queue, sent or failed
    std::string& out = slot.outbox;
    if (t.block) {
      std::uint64_t token = 0;
      try {
        token = t.block.export_to_child(slot.child);
      } catch (const std::exception& e) {
        fail_later_locked(std::move(t), std::make_exception_ptr(start_error(
                                            std::string("could not share a payload block with "
                                                        "the worker: ") +
                                                e.what(),
                                            std::error_code())));
        return;
      }
      const std::size_t at = begin_frame(out, frame_kind::task, t.id, body_in_block);
      append_u64(out, token);
      append_u64(out, t.block_size);
      end_frame(out, at);
    } else {
      const std::size_t at = begin_frame(out, frame_kind::task, t.id);
      out += t.body;
      end_frame(out, at);
    }
    slot.in_flight_bytes += t.wire_size();
    slot.in_flight.push_back(std::move(t));
    slot.in_flight_count.store(slot.in_flight.size(), std::memory_order_relaxed);
    ++slot.tasks_sent;
    if (options.maxtasksperchild != 0 && slot.tasks_sent >= options.maxtasksperchild) {
      append_stop(slot);
    }
  }

  void append_stop(worker_slot& slot) {
    end_frame(slot.outbox, begin_frame(slot.outbox, frame_kind::stop, 0));
    slot.stop_sent = true;
    slot.accepting = false;
  }

  void flush_outbox_locked(worker_slot& slot) {
    if (slot.outbox.empty()) return;
    try {
      slot.channel.write_all(slot.outbox.data(), slot.outbox.size());
    } catch (const std::system_error&) {
      // The worker is gone; its supervisor sees the end of stream and re-routes its tasks.
    }
    slot.outbox.clear();
  }

  // Failures found while holding the lock are settled after it is released.
  std::vector<settlement> deferred;
  void fail_later_locked(task t, std::exception_ptr error) {
    deferred.push_back({std::move(t.state), t.part, {}, {}, 0, std::move(error)});
  }

  /// Settles what was deferred; call without the lock.
  void settle_deferred(std::unique_lock<std::mutex>& lock) {
    if (deferred.empty()) return;
    std::vector<settlement> batch;
    batch.swap(deferred);
    lock.unlock();
    settle_all(batch);
    lock.lock();
  }

  void settle_all(std::vector<settlement>& batch) {
    if (batch.empty()) return;
    std::vector<std::function<void()>> callbacks;
    for (auto& s : batch) {
      auto more = s.state->settle(s.part, std::move(s.bytes), std::move(s.block), s.block_size,
                                  std::move(s.error));
      for (auto& callback : more)
        callbacks.push_back(std::move(callback));
    }
    {
      // Counted as done before any callback runs: a callback may close and join (or drop)
      // the pool, which waits for this count to reach zero.
      std::lock_guard<std::mutex> lock(mutex);
      outstanding -= batch.size();
      if (outstanding == 0) {
        if (stop_requested) stop_idle_workers_locked();
        changed.notify_all();
      }
    }
    run_callbacks(callbacks);
  }

  /// After join() (or a destructor) asked for it: once nothing is outstanding, every worker
  /// gets its stop frame and the supervisors end.
  void request_stop_locked() {
    stop_requested = true;
    if (outstanding == 0) stop_idle_workers_locked();
    changed.notify_all();
  }

  void stop_idle_workers_locked() {
    for (auto& s : slots) {
      if (!s->accepting) continue;
      append_stop(*s);
      flush_outbox_locked(*s);
    }
  }

  /// True on a supervisor of this pool, i.e. inside one of its callbacks.
  bool on_own_supervisor() const noexcept { return supervised_pool == this; }

  /// Marks the pool broken: every queued and running task fails with `error`, every worker
  /// is killed, nothing is restarted, later submits throw it.
  void break_locked(std::exception_ptr error) {
    if (broken) return;
    broken = error;
    fail_everything_locked(error);
    for (auto& s : slots)
      s->child.kill();
    changed.notify_all();
  }

  void fail_everything_locked(const std::exception_ptr& error) {
    for (auto& t : pending)
      fail_later_locked(std::move(t), error);
    pending.clear();
    for (auto& s : slots) {
      for (auto& t : s->in_flight)
        fail_later_locked(std::move(t), error);
      s->in_flight.clear();
      s->in_flight_count.store(0, std::memory_order_relaxed);
      s->in_flight_bytes = 0;
      s->accepting = false;
    }
  }

  // -- supervision -----------------------------------------------------------------------------

#if MULTIPROC_HAS_FORK
  static int forked_worker_entry(void* context) {
    auto& channel = *static_cast<os::channel*>(context);
    frame_reader reader(channel);
    return run_worker(channel, reader);
  }
#endif

  void start_worker(os::child& child, os::channel& channel) {
    auto [parent_end, child_end] = os::make_channel_pair();
    std::string greeting;
    if (method == start_method::fork) {
#if MULTIPROC_HAS_FORK
      child =
          os::fork_child(&forked_worker_entry, &child_end, &child_end, os::child_kind::pool_worker);
      child_end.close();
#endif
    } else {
      const std::string secret = make_secret();
      child = os::spawn_child(child_end, secret, os::child_kind::pool_worker);
      append_hello(greeting, secret, true);
    }
    // Always sent, empty when there is none: the worker says it is ready only after it, so a
    // worker whose initializer crashes counts as a failed start.
    const std::size_t at = begin_frame(greeting, frame_kind::initializer, 0);
    if (options.initializer) greeting += *options.initializer.encoded();
    end_frame(greeting, at);
    channel = std::move(parent_end);
    {
      try {
        channel.write_all(greeting.data(), greeting.size());
      } catch (const std::system_error&) {
        // Died at once: the supervisor reads the end of stream and counts a failed start.
      }
    }
  }

  void supervise(worker_slot& slot) {
    os::block_broken_pipe_signal_in_this_thread();
    supervised_pool = this;
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      if (phase == phase::terminating || broken) break;
      if (stop_requested && outstanding == 0) break;
      lock.unlock();
      os::child child;
      os::channel channel;
      std::exception_ptr start_failure;
      try {
        start_worker(child, channel);
      } catch (...) {
        start_failure = std::current_exception();
      }
      lock.lock();
      changed.notify_all();
      if (start_failure) {
        if (++slot.failed_starts >= start_attempts) break_locked(start_failure);
        settle_deferred(lock);
        continue;
      }
      slot.child = std::move(child);
      slot.channel = std::move(channel);
      slot.tasks_sent = 0;
      slot.ready_seen = false;
      slot.stop_sent = false;
      slot.in_flight_bytes = 0;
      slot.budget = std::min(in_flight_budget, slot.channel.write_capacity() / 2);
      if (phase == phase::terminating || broken) {
        slot.child.kill();
      } else {
        slot.accepting = true;
        if (stop_requested && outstanding == 0) append_stop(slot);
        dispatch_locked();
        settle_deferred(lock);
      }
      lock.unlock();
      read_results(slot);
      finish_worker(slot, lock);
    }
    --live_threads;
    changed.notify_all();
    supervised_pool = nullptr;
  }

  /// How long a supervisor may watch its channel for an answer before it blocks. The answer
  /// to a short task comes within about one wake-up; a supervisor still awake to read it
  /// spares the waiting caller one of the three wake-ups on its path (worker, supervisor,
  /// caller), leaving the two a plain pipe round trip has. Zero for long or unknown tasks:
  /// nothing to gain there.
  int watch_budget_us() const {
    if (average_task_us < 0 || average_task_us >= 50) return 0;
    return 60 + static_cast<int>(2 * average_task_us);
  }
  std::atomic<int> watch_us{0};

  /// Watches the channel (without blocking) for up to watch_us while someone is blocked on a
  /// result and this worker has tasks: returns as soon as it is readable, or when the time is
  /// up; the caller then reads (blocking) as usual.
  void watch_briefly(worker_slot& slot) {
    const int budget = watch_us.load(std::memory_order_relaxed);
    if (budget <= 0 || blocked_waiters.load(std::memory_order_relaxed) == 0 ||
        slot.in_flight_count.load(std::memory_order_relaxed) == 0) {
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(budget);
    while (!slot.channel.readable_now()) {
      if (std::chrono::steady_clock::now() >= deadline) return;
    }
  }

  /// Reads the worker's frames until its end of stream, settling results in batches.
  void read_results(worker_slot& slot) {
    frame_reader reader(slot.channel);
    std::vector<settlement> batch;
    std::vector<std::uint32_t> elapsed;
    std::vector<std::uint64_t> ids;
    std::string releases;
    frame_header header{};
    const char* body = nullptr;
    try {
      for (;;) {
        if (!reader.has_buffered_frame()) watch_briefly(slot);
        if (!reader.next(header, body)) break;
        switch (header.kind) {
          case frame_kind::ready: {
            std::lock_guard<std::mutex> guard(mutex);
            slot.ready_seen = true;
            slot.failed_starts = 0;
            break;
          }
          case frame_kind::result:
            batch.push_back(decode_result(slot, header, body, releases));
            ids.push_back(header.id);
            elapsed.push_back(header.elapsed_us);
            break;
          case frame_kind::initializer_failed: {
            body_reader r(body, header.body_size);
            r.u8();
            const std::string type(r.string());
            const std::string message(r.string());
            std::unique_lock<std::mutex> guard(mutex);
            break_locked(std::make_exception_ptr(state_error(
                "pool: the initializer failed in worker " + std::to_string(slot.child.pid()) +
                ": " + type + (message.empty() ? "" : ": " + message))));
            settle_deferred(guard);
            break;
          }
          default:
            break;  // unknown frames from a newer worker are ignored
        }
        if (!batch.empty() && !reader.has_buffered_frame()) {
          route(slot, batch, ids, elapsed, releases);
        }
      }
    } catch (const std::exception&) {
      // A broken channel or a torn frame: treat it as the worker's end.
    }
    if (!batch.empty()) route(slot, batch, ids, elapsed, releases);
  }

  settlement decode_result(worker_slot& slot, const frame_header& header, const char* body,
                           std::string& releases) {
    settlement s;
    try {
      body_reader r(body, header.body_size);
      const auto status = static_cast<result_status>(r.u8());
      if (status == result_status::ok) {
        if (header.flags & body_in_block) {
          const std::uint64_t token = r.u64();
          s.block_size = static_cast<std::size_t>(r.u64());
          try {
            s.block = os::shared_block::open_from_child(slot.child, token, s.block_size);
          } catch (const std::exception& e) {
            s.error = std::make_exception_ptr(serialization_error(
                serialization_error::phase::decode_result,
                std::string("could not map the result's shared block: ") + e.what()));
          }
          end_frame(releases, begin_frame(releases, frame_kind::release, header.id));
        } else {
          s.bytes.assign(r.position(), r.remaining());
        }
      } else {
        const std::string type(r.string());
        const std::string message(r.string());
        if (status == result_status::raised) {
          s.error = std::make_exception_ptr(remote_error(type, message, slot.child.pid()));
        } else {
          s.error = std::make_exception_ptr(serialization_error(
              status == result_status::bad_arguments ? serialization_error::phase::decode_arguments
                                                     : serialization_error::phase::encode_result,
              message));
        }
      }
    } catch (const std::exception& e) {
      s.error = std::make_exception_ptr(serialization_error(
          serialization_error::phase::decode_result, std::string("malformed result: ") + e.what()));
    }
    return s;
  }

  void route(worker_slot& slot, std::vector<settlement>& batch, std::vector<std::uint64_t>& ids,
             std::vector<std::uint32_t>& elapsed, std::string& releases) {
    std::vector<settlement> ready;
    {
      std::unique_lock<std::mutex> lock(mutex);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        // Results come back in the order tasks were sent; a task failed by terminate() or a
        // broken pool has already left in_flight, and its late result is dropped.
        if (slot.in_flight.empty() || slot.in_flight.front().id != ids[i]) continue;
        task t = std::move(slot.in_flight.front());
        slot.in_flight.pop_front();
        slot.in_flight_bytes -= t.wire_size();
        const double sample = elapsed[i];
        average_task_us = average_task_us < 0 ? sample : 0.8 * average_task_us + 0.2 * sample;
        watch_us.store(watch_budget_us(), std::memory_order_relaxed);
        batch[i].state = std::move(t.state);
        batch[i].part = t.part;
        ready.push_back(std::move(batch[i]));
      }
      slot.in_flight_count.store(slot.in_flight.size(), std::memory_order_relaxed);
      if (!releases.empty()) {
        slot.outbox += releases;
        releases.clear();
      }
      dispatch_locked();
      flush_outbox_locked(slot);
      for (auto& d : deferred)
        ready.push_back(std::move(d));
      deferred.clear();
    }
    batch.clear();
    ids.clear();
    elapsed.clear();
    settle_all(ready);
  }

  /// After a worker's end of stream: reap it, fail the task it held, re-queue the rest.
  void finish_worker(worker_slot& slot, std::unique_lock<std::mutex>& lock) {
    if (!slot.child.wait(std::chrono::seconds(2))) {
      // It closed its channel but lives on: it can no longer serve the pool.
      slot.child.kill();
      slot.child.wait(std::nullopt);
    }
    lock.lock();
    slot.accepting = false;
    slot.channel.close();
    slot.outbox.clear();
    const int code = slot.child.exit_code().value_or(-1);
    if (!slot.in_flight.empty()) {
      // The first task it had not answered was running: it is lost. Those behind it had not
      // started: they go to another worker, so nothing runs twice and nothing is lost. A
      // worker that never said it was ready had started none of them.
      if (slot.ready_seen) {
        task lost = std::move(slot.in_flight.front());
        slot.in_flight.pop_front();
        fail_later_locked(std::move(lost),
                          std::make_exception_ptr(worker_lost(slot.child.pid(), code)));
      }
      for (auto it = slot.in_flight.rbegin(); it != slot.in_flight.rend(); ++it) {
        it->state->waiting_bytes += it->encoded_bytes;
        pending.push_front(std::move(*it));
      }
      slot.in_flight.clear();
      slot.in_flight_bytes = 0;
    }
    slot.in_flight_count.store(0, std::memory_order_relaxed);
    if (!slot.ready_seen && phase != phase::terminating && !broken) {
      if (++slot.failed_starts >= start_attempts) {
        break_locked(std::make_exception_ptr(start_error(
            "pool: worker " + std::to_string(slot.child.pid()) + " exited with code " +
                std::to_string(code) + " before it was ready, " + std::to_string(start_attempts) +
                " times in a row (does main() call mp::init(argc, argv) first?)",
            std::error_code())));
      }
    }
    dispatch_locked();
    settle_deferred(lock);
  }

  /// Joins the supervisors, once, whichever threads ask. Never called on a supervisor (a
  /// callback that joins or terminates its pool leaves the joining to the pool's owner or to
  /// ~pool_impl), so the lock is never held by a thread another joiner waits for.
  void join_threads() {
    std::lock_guard<std::mutex> lock(threads_mutex);
    for (auto& s : slots) {
      if (s->thread.joinable()) s->thread.join();
    }
  }

  /// Supervisors other than the calling thread still running.
  std::size_t other_live_threads() const {
    return live_threads - (supervised_pool == this ? 1 : 0);
  }
};

}  // namespace multiproc::detail

namespace multiproc {

namespace detail {

std::shared_ptr<pool_impl> make_pool(const pool_options& options) {
  ensure_may_start();
  auto impl = std::make_shared<pool_impl>();
  impl->options = options;
  if (options.initializer) check_frame_size(options.initializer.encoded()->size());
  if (impl->options.processes == 0) impl->options.processes = cpu_count();
  impl->method = checked_method(options.method.value_or(default_start_method()));
  impl->creator = os::current_pid();
  const unsigned count = impl->options.processes;
  for (unsigned i = 0; i < count; ++i) {
    auto slot = std::make_unique<worker_slot>();
    slot->index = i;
    impl->slots.push_back(std::move(slot));
  }
  try {
    std::lock_guard<std::mutex> lock(impl->mutex);
    for (auto& s : impl->slots) {
      worker_slot* slot = s.get();
      // Each supervisor owns a reference: a callback may drop the last other one while the
      // supervisor that runs it is still inside the pool.
      s->thread = std::thread([impl, slot] { impl->supervise(*slot); });
      ++impl->live_threads;
    }
  } catch (const std::system_error& e) {
    // No thread for every slot: stop the ones that started before reporting it.
    {
      std::unique_lock<std::mutex> lock(impl->mutex);
      impl->phase = pool_impl::phase::terminating;
      for (auto& s : impl->slots)
        s->child.kill();
      impl->changed.notify_all();
    }
    impl->join_threads();
    throw start_error("mp::pool: could not start a supervisor thread", e.code());
  }
  // Wait until every slot has started a worker (or the pool gave up), so a program that
  // cannot start at all is reported here rather than on the first get().
  std::unique_lock<std::mutex> lock(impl->mutex);
  impl->changed.wait(lock, [&] {
    return impl->broken || std::all_of(impl->slots.begin(), impl->slots.end(),
                                       [](const auto& s) { return s->child.valid(); });
  });
  if (impl->broken) {
    std::exception_ptr failure = impl->broken;
    lock.unlock();
    impl->join_threads();
    std::rethrow_exception(failure);
  }
  return impl;
}

std::shared_ptr<result_state> pool_submit(pool_impl& pool, const call_spec& call) {
  return pool.submit(&call, 1);
}
std::shared_ptr<result_state> pool_submit_parts(pool_impl& pool, const call_spec* calls,
                                                std::size_t count) {
  return pool.submit(calls, count);
}
std::shared_ptr<result_state> pool_submit_parts_paced(pool_impl& pool, const call_spec* calls,
                                                      std::size_t count) {
  return pool.submit(calls, count, true);
}
std::size_t pool_workers(const pool_impl& pool) noexcept {
  return pool.slots.size();
}

}  // namespace detail

namespace {
unsigned at_least_one(unsigned processes) {
  if (processes == 0) {
    throw std::invalid_argument("mp::pool: the number of processes must be at least 1");
  }
  return processes;
}
}  // namespace

pool::pool(unsigned processes) : pool(pool_options{at_least_one(processes), {}, 0, std::nullopt}) {}

pool::pool(const pool_options& options) : impl_(detail::make_pool(options)) {}

pool::pool(pool&&) noexcept = default;
pool& pool::operator=(pool&& other) noexcept {
  if (this != &other) {
    pool doomed(std::move(*this));
    impl_ = std::move(other.impl_);
  }
  return *this;
}

pool::~pool() {
  if (!impl_) return;
  // A forked copy of a pool belongs to the parent: its threads and workers are not ours.
  if (impl_->creator != detail::os::current_pid()) {
    new std::shared_ptr<detail::pool_impl>(std::move(impl_));  // leak it: no destructor runs
    return;
  }
  try {
    {
      std::lock_guard<std::mutex> lock(impl_->mutex);
      if (impl_->phase == detail::pool_impl::phase::running)
        impl_->phase = detail::pool_impl::phase::closed;
      if (impl_->on_own_supervisor()) {
        // Dropped inside its own callback: this thread cannot wait for results it reads
        // itself. The supervisors finish the submitted work and stop; their references keep
        // the pool alive until then.
        impl_->request_stop_locked();
        return;
      }
    }
    join();
  } catch (...) {
    terminate();
  }
}

const std::shared_ptr<detail::pool_impl>& pool::impl() const {
  if (!impl_) throw state_error("pool: this object was moved from");
  return impl_;
}

void pool::close() {
  auto& p = *impl();
  std::lock_guard<std::mutex> lock(p.mutex);
  if (p.phase == detail::pool_impl::phase::running) p.phase = detail::pool_impl::phase::closed;
}

void pool::join() {
  auto& p = *impl();
  {
    std::unique_lock<std::mutex> lock(p.mutex);
    if (p.phase == detail::pool_impl::phase::running) {
      throw state_error("pool::join: call close() or terminate() first");
    }
    p.request_stop_locked();
    if (p.on_own_supervisor() && p.outstanding != 0) {
      // Waiting here would wait for results only this very thread reads.
      throw state_error(
          "pool::join inside one of the pool's callbacks while tasks are still running: the "
          "callback's thread is the one that reads their results (the pool still finishes "
          "them and stops)");
    }
    // Inside a callback nothing is outstanding now, and the workers have their stop frames;
    // this thread cannot join itself, so whoever owns the pool joins the threads later.
    if (p.on_own_supervisor()) return;
    p.changed.wait(lock, [&] { return p.outstanding == 0; });
  }
  p.join_threads();
}

void pool::terminate() {
  auto& p = *impl();
  {
    std::unique_lock<std::mutex> lock(p.mutex);
    p.phase = detail::pool_impl::phase::terminating;
    p.fail_everything_locked(std::make_exception_ptr(
        state_error("pool: the task was cancelled because the pool was terminated")));
    for (auto& s : p.slots)
      s->child.terminate();
    p.changed.notify_all();
    p.settle_deferred(lock);
    // Workers that ignore SIGTERM get SIGKILL after a short grace.
    if (!p.changed.wait_for(lock, std::chrono::milliseconds(500),
                            [&] { return p.other_live_threads() == 0; })) {
      for (auto& s : p.slots)
        s->child.kill();
    }
    if (p.on_own_supervisor()) return;  // as in join(): the owner joins the threads later
  }
  p.join_threads();
}

std::size_t pool::size() const {
  return impl()->slots.size();
}

}  // namespace multiproc
