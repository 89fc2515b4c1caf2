// The pool's supervision: each worker slot has one supervisor thread that starts its worker,
// reads and routes its results, and reaps and restarts it when it ends (see pool_impl.hpp).
#include <chrono>

#include <multiproc/errors.hpp>

#include "../../os/sync.hpp"
#include "../launcher.hpp"
#include "../protocol/control.hpp"
#include "../protocol/ledger.hpp"
#include "../protocol/task.hpp"
#include "pool_impl.hpp"

namespace multiproc::detail {

namespace {
/// Starts of one slot that fail in a row (or die before they are ready) before the pool
/// gives up: no respawn storm.
constexpr int start_attempts = 3;
/// In-flight bytes per worker: at most this, and at most half of what its pipe holds (a user
/// over the kernel's pipe quota gets small pipes), so a write never waits for the worker.
constexpr std::size_t in_flight_budget = 48 * 1024;
/// How long a supervisor that has just answered a blocked caller watches for that caller's
/// next task (watch_briefly): a wake-up and a submit take a few microseconds.
constexpr std::chrono::microseconds watch_grace{20};
}  // namespace

void pool_impl::supervise(worker_slot& slot) {
  const own_thread library_thread;
  os::block_broken_pipe_signal_in_this_thread();
  set_supervised_pool(this);
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (phase_ == phase::terminating || broken_) break;
    if (stop_requested_ && outstanding_ == 0) break;
    start_worker(slot, lock);
    if (!slot.child.valid()) continue;  // the start failed; it was counted
    lock.unlock();
    read_results(slot);
    finish_worker(slot, lock);
  }
  --live_threads_;
  changed_.notify_all();
  set_supervised_pool(nullptr);
}

/// Starts the slot's worker (without the lock: a start takes a fork or an exec), then, with
/// the lock back, makes it the slot's and hands it queued work. A start that fails counts
/// towards start_attempts.
void pool_impl::start_worker(worker_slot& slot, std::unique_lock<std::mutex>& lock) {
  lock.unlock();
  // The initializer frame is always sent, empty when there is none: the worker says it is
  // ready only after it, so a worker whose initializer crashes counts as a failed start.
  std::exception_ptr failure;
  launched started;
  try {
    started = launch({method_, child_role::pool_worker, options_.initializer.encoded().get()});
  } catch (...) {
    failure = std::current_exception();
  }
  lock.lock();
  changed_.notify_all();
  if (failure) {
    slot.child = os::child();
    if (++slot.failed_starts >= start_attempts) break_locked(failure);
    settle_deferred(lock);
    return;
  }
  slot.child = std::move(started.child);
  slot.stamp = os::stamp_of(slot.child);
  slot.channel = std::move(started.channel);
  slot.tasks_sent = 0;
  slot.tasks_kept = 0;
  slot.retiring = false;
  slot.ledger_refused = false;
  slot.taken_back = 0;
  slot.ledger.reset();  // a new worker gets its word when it first holds two tasks
  slot.ready_seen = false;
  slot.in_flight_bytes = 0;
  slot.budget = std::min(in_flight_budget, slot.channel.write_capacity() / 2);
  if (phase_ == phase::terminating || broken_) {
    slot.child.kill();
    return;
  }
  slot.accepting = true;
  if (stop_requested_ && outstanding_ == 0) append_stop_locked(slot);
  dispatch_locked();
  settle_deferred(lock);
}

/// Watches the channel (without blocking) for up to watch_us_ while someone is blocked on a
/// result and this worker has tasks: returns as soon as it is readable, or when the time is
/// up; the caller then reads (blocking) as usual. `answered_a_waiter`: the results just
/// settled had a caller blocked on them. That caller, a loop of apply() say, sends its next
/// task within microseconds of waking, so the watch waits up to watch_grace for it rather
/// than leave at once (this worker has nothing in flight yet, and the caller is not blocked
/// yet): a supervisor asleep in read() would add a third wake-up to the round trip.
void pool_impl::watch_briefly(worker_slot& slot, bool answered_a_waiter) {
  const int budget = watch_us_.load(std::memory_order_relaxed);
  const auto worth_watching = [&] {
    return blocked_waiters() != 0 && slot.in_flight_count.load(std::memory_order_relaxed) != 0;
  };
  if (budget <= 0 || (!answered_a_waiter && !worth_watching())) return;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::microseconds(budget);
  const auto grace_ends = start + (answered_a_waiter ? watch_grace : std::chrono::microseconds(0));
  while (!slot.channel.readable_now()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline || (now >= grace_ends && !worth_watching())) return;
  }
}

/// Reads the worker's frames until its end of stream, settling results in batches (all the
/// frames one read brought in, under one lock).
void pool_impl::read_results(worker_slot& slot) {
  frame_reader reader(slot.channel);
  std::vector<settlement> batch;
  std::vector<std::uint32_t> elapsed;
  std::vector<std::uint64_t> ids;
  std::string releases;
  frame_header header{};
  const char* body = nullptr;
  bool answered_a_waiter = false;
  try {
    for (;;) {
      if (!reader.has_buffered_frame()) {
        watch_briefly(slot, answered_a_waiter);
        answered_a_waiter = false;
      }
      if (!reader.next(header, body)) break;
      switch (header.kind) {
        case frame_kind::ready: {
          std::lock_guard<std::mutex> guard(mutex_);
          slot.ready_seen = true;
          slot.failed_starts = 0;
          break;
        }
        case frame_kind::result:
          batch.push_back(
              {nullptr, 0, read_result(header, body, slot.child, slot.channel, releases)});
          ids.push_back(header.id);
          elapsed.push_back(header.elapsed_us);
          break;
        case frame_kind::skipped: {
          std::unique_lock<std::mutex> guard(mutex_);
          skipped_locked(slot);
          settle_deferred(guard);
          break;
        }
        case frame_kind::ledger_refused: {
          // It exits having started nothing after the ledger frame; no worker gets a claim
          // word from now on, so none holds more than one task (no churn of workers).
          std::lock_guard<std::mutex> guard(mutex_);
          ledger_unavailable_ = true;
          break;
        }
        case frame_kind::initializer_failed: {
          std::unique_lock<std::mutex> guard(mutex_);
          break_locked(read_initializer_failed(header, body, slot.child.pid()));
          settle_deferred(guard);
          break;
        }
        default:
          break;  // unknown frames from a newer worker are ignored
      }
      if (!batch.empty() && !reader.has_buffered_frame()) {
        answered_a_waiter = blocked_waiters() != 0;
        route(slot, batch, ids, elapsed, releases);
      }
    }
  } catch (const std::exception&) {
    // A broken channel or a torn frame: treat it as the worker's end.
  }
  if (!batch.empty()) route(slot, batch, ids, elapsed, releases);
}

/// Matches results to the tasks in flight, settles them, and lets the worker have more.
void pool_impl::route(worker_slot& slot, std::vector<settlement>& batch,
                      std::vector<std::uint64_t>& ids, std::vector<std::uint32_t>& elapsed,
                      std::string& releases) {
  std::vector<settlement> ready;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      // Results come back in the order tasks were sent; a task failed by terminate() or a
      // broken pool has already left in_flight, and its late result is dropped.
      if (slot.in_flight.empty() || slot.in_flight.front().id != ids[i]) continue;
      task t = std::move(slot.in_flight.front());
      slot.in_flight.pop_front();
      slot.in_flight_bytes -= t.wire_size();
      record_task_time_locked(elapsed[i]);
      batch[i].state = std::move(t.state);
      batch[i].part = t.part;
      ready.push_back(std::move(batch[i]));
    }
    slot.in_flight_count.store(slot.in_flight.size(), std::memory_order_relaxed);
    // maxtasksperchild: it has answered every task it kept; now it may stop.
    if (slot.retiring && slot.accepting && slot.in_flight.empty()) append_stop_locked(slot);
    if (!releases.empty()) {
      slot.outbox += releases;
      releases.clear();
    }
    dispatch_locked();
    flush_outbox_locked(slot);
    for (auto& d : deferred_)
      ready.push_back(std::move(d));
    deferred_.clear();
  }
  batch.clear();
  ids.clear();
  elapsed.clear();
  settle_all(ready);
}

/// After a worker's end of stream: reap it, fail the task it held, re-queue the rest. Called
/// without the lock; returns with it held.
void pool_impl::finish_worker(worker_slot& slot, std::unique_lock<std::mutex>& lock) {
  if (!slot.child.wait(std::chrono::seconds(2))) {
    // It closed its channel but lives on: it can no longer serve the pool.
    slot.child.kill();
    slot.child.wait(std::nullopt);
  }
  lock.lock();
  slot.accepting = false;
  slot.channel.close();
  slot.outbox.clear();
  slot.outbox_attached.clear();
  const int code = slot.child.exit_code().value_or(-1);
  slot.taken_back = 0;
  if (!slot.in_flight.empty()) {
    // The first task it had not answered was running if the worker had said it was ready
    // (before that it was still in its initializer) and, where it has a claim word, had
    // claimed it: it is lost. Those behind it had not started: they go to another worker, so
    // nothing runs twice and nothing is lost. (The word starts at the tasks sent before it was
    // given, which a worker that died in its initializer never ran.)
    const bool started = slot.ready_seen && (!slot.ledger || slot.in_flight.front().number <=
                                                                 slot.ledger->last_claimed());
    if (started) {
      task lost = std::move(slot.in_flight.front());
      slot.in_flight.pop_front();
      lost.returned();
      fail_later_locked(std::move(lost),
                        std::make_exception_ptr(worker_lost(slot.child.pid(), code)));
    }
    for (auto it = slot.in_flight.rbegin(); it != slot.in_flight.rend(); ++it) {
      it->state->waiting_bytes += it->encoded_bytes;
      it->returned();
      requeue_front_locked(std::move(*it));
    }
    slot.in_flight.clear();
    slot.in_flight_bytes = 0;
  }
  slot.in_flight_count.store(0, std::memory_order_relaxed);
  if (!slot.ready_seen && phase_ != phase::terminating && !broken_) {
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

}  // namespace multiproc::detail
