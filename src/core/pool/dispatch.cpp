// The pool's dispatch: submission, scheduling (which worker gets which task, and how many
// ahead), and settling outcomes (see pool_impl.hpp for the state and its locks).
#include <algorithm>
#include <functional>

#include <multiproc/errors.hpp>

#include "../protocol/call.hpp"
#include "../protocol/control.hpp"
#include "pool_impl.hpp"

namespace multiproc::detail {

namespace {
/// Encoded bytes of one paced submission that may wait for a worker.
constexpr std::size_t waiting_budget = std::size_t{64} << 20;

std::exception_ptr cancelled_by_terminate() {
  return std::make_exception_ptr(
      state_error("pool: the task was cancelled because the pool was terminated"));
}
}  // namespace

// ---- submission -------------------------------------------------------------------------------

std::shared_ptr<result_state> pool_impl::submit(const call_spec* calls, std::size_t count,
                                                bool paced, std::size_t items,
                                                std::size_t chunk_items) {
  auto state = std::make_shared<result_state>(count, this, weak_from_this(), items, chunk_items);
  if (count == 0) {
    // Nothing to run, but a closed or broken pool still says so, as Python's does.
    std::lock_guard<std::mutex> lock(mutex_);
    check_accepting_locked();
    return state;
  }
  // Not inside one of this pool's callbacks: waiting there for parts to be dispatched could
  // wait for this very thread.
  paced = paced && !on_own_supervisor();
  // Up front, as many parts as fit the budget (all of them unless paced): an error here
  // throws with nothing submitted.
  std::vector<task> tasks;
  tasks.reserve(paced ? std::min<std::size_t>(count, 64) : count);
  std::size_t encoded = 0;
  while (tasks.size() < count && (!paced || encoded <= waiting_budget)) {
    const std::size_t part = tasks.size();
    encoded += encode_part(calls, part, state, tasks.emplace_back());
  }
  std::unique_lock<std::mutex> lock(mutex_);
  check_accepting_locked();
  for (auto& t : tasks)
    queue_locked(std::move(t));
  // Every part counts from now, queued or not: join() waits for all of them.
  outstanding_ += count;
  dispatch_locked();
  settle_deferred(lock);
  if (tasks.size() < count) submit_the_rest(calls, count, tasks.size(), state, lock);
  return state;
}

std::size_t pool_impl::encode_part(const call_spec* calls, std::size_t part,
                                   const std::shared_ptr<result_state>& state, task& t) {
  t.state = state;
  t.part = part;
  // Remote workers can map no block and receive no handle: such an argument is refused.
  encode_call_body(calls[part], t.body, 0, !remote_workers_, t.block, t.block_size,
                   remote_workers_ ? nullptr : &t.handles, &t.tickets);
  t.encoded_bytes = t.block ? t.block_size : t.body.size();
  return t.encoded_bytes;
}

void pool_impl::queue_locked(task t) {
  t.id = next_id_++;
  t.state->waiting_bytes += t.encoded_bytes;
  t.queue_key = ++back_key_;
  t.state->queue_key(t.part) = t.queue_key;
  pending_.push_back(std::move(t));
}

/// Puts a task that had been sent (taken back, or its worker died) back at the front of the
/// queue; the caller has counted its bytes as waiting again.
void pool_impl::requeue_front_locked(task t) {
  t.queue_key = --front_key_;
  t.state->queue_key(t.part) = t.queue_key;
  pending_.push_front(std::move(t));
}

/// The paced rest of submit(), with the lock held: waits while the state's waiting parts
/// exceed the budget, then encodes (without the lock) and queues the next part. The parts
/// already count as outstanding, so a close() meanwhile does not stop them; if encoding
/// fails, or the pool is terminated or broken, the parts not queued fail with that error
/// (map()'s get() then throws the first failed part's error, in input order).
void pool_impl::submit_the_rest(const call_spec* calls, std::size_t count, std::size_t next,
                                const std::shared_ptr<result_state>& state,
                                std::unique_lock<std::mutex>& lock) {
  std::exception_ptr failure;
  bool cancelled = false;
  const auto stopped = [&] {
    return phase_ == phase::terminating || broken_ != nullptr || cancelling_pending_;
  };
  const auto why_stopped = [&] {
    if (broken_) return broken_;
    if (phase_ == phase::terminating) return cancelled_by_terminate();
    cancelled = true;
    return std::make_exception_ptr(
        cancelled_error("pool: the task was cancelled by close(mp::cancel_pending)"));
  };
  while (next < count) {
    ++paced_submitters_;
    changed_.wait(lock, [&] { return state->waiting_bytes <= waiting_budget || stopped(); });
    --paced_submitters_;
    if (stopped()) {
      failure = why_stopped();
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
    // Terminated or broken while this part was being encoded: everything queued has been
    // failed already, and this part must not wait in the queue for a worker that never comes.
    if (!failure && stopped()) failure = why_stopped();
    if (failure) break;
    queue_locked(std::move(t));
    ++next;
    dispatch_locked();
    settle_deferred(lock);
  }
  if (next == count) return;
  for (; next < count; ++next)
    deferred_.push_back({state, next, {{}, {}, 0, failure}, cancelled});
  settle_deferred(lock);
}

void pool_impl::check_accepting_locked() const {
  if (phase_ == phase::terminating) throw state_error("pool: submit after terminate()");
  if (phase_ == phase::closed) throw state_error("pool: submit after close()");
  if (broken_) std::rethrow_exception(broken_);
}

// ---- scheduling -------------------------------------------------------------------------------

/// How many tasks a worker may hold: one at a time while tasks are long or unknown (so the
/// next task goes to whichever worker frees first, as in Python); two for medium tasks (the
/// worker never waits for the parent's round trip); many for tiny tasks (one wake-up serves
/// a batch).
std::size_t pool_impl::depth_limit_locked() const {
  // Without a claim ledger nothing sent could be taken back: one task at a time. Remote
  // workers (MPI ranks) never have one, and a round trip to them costs too much to send one
  // short task at a time: they hold several short tasks that cannot be taken back (README,
  // Scaling out).
  if ((ledger_unavailable_ && !remote_workers_) || average_task_us_ < 0 ||
      average_task_us_ >= 10000) {
    return 1;
  }
  if (average_task_us_ >= 100) return 2;
  return std::min<std::size_t>(64,
                               2 + static_cast<std::size_t>(400 / std::max(average_task_us_, 1.0)));
}

/// Hands queued tasks to the least-loaded workers that may take more, then writes every
/// worker's outbox. A worker never holds more in-flight bytes than its budget (see
/// supervision.cpp), so these writes under the lock never wait for a worker that is itself
/// blocked writing results. Called whenever a task is queued or a worker frees up.
void pool_impl::dispatch_locked() {
  const std::size_t depth = depth_limit_locked();
  drop_cancelled_locked();
  while (!pending_.empty()) {
    worker_slot* best = nullptr;
    const std::size_t size = pending_.front().wire_size();
    for (auto& s : slots_) {
      if (!s->accepting || s->retiring || s->taken_back != 0) continue;
      if (s->in_flight.size() >= (s->ledger_refused ? 1 : depth)) continue;
      if (!s->in_flight.empty() && s->in_flight_bytes + size > s->budget) continue;
      if (best == nullptr || s->in_flight.size() < best->in_flight.size()) best = s.get();
    }
    if (best == nullptr) break;
    // A second task for one worker: it gets its claim word first, or takes no second task.
    if (!best->in_flight.empty() && !best->ledger && !remote_workers_ &&
        !give_ledger_locked(*best)) {
      break;
    }
    task t = std::move(pending_.front());
    pending_.pop_front();
    send_task_locked(*best, std::move(t));
    drop_cancelled_locked();
  }
  for (auto& s : slots_)
    flush_outbox_locked(*s);
  if (paced_submitters_ != 0) changed_.notify_all();
  note_stranding_locked();
}

void pool_impl::send_task_locked(worker_slot& slot, task t) {
  t.state->waiting_bytes -= t.encoded_bytes;  // it leaves the queue, sent or failed
  try {
    append_task(slot.outbox, t.id, t.body, t.block, t.block_size, t.handles, slot.child,
                slot.outbox_attached);
  } catch (const std::exception& e) {
    fail_later_locked(std::move(t),
                      std::make_exception_ptr(start_error(
                          std::string("could not pass the task's payload block or handles to "
                                      "the worker: ") +
                              e.what(),
                          std::error_code())));
    return;
  }
  t.number = ++slot.tasks_sent;
  for (auto& ticket : t.tickets)
    ticket->delivered_to(slot.stamp);
  slot.in_flight_bytes += t.wire_size();
  slot.in_flight.push_back(std::move(t));
  slot.in_flight_count.store(slot.in_flight.size(), std::memory_order_relaxed);
  if (options_.maxtasksperchild != 0 && ++slot.tasks_kept >= options_.maxtasksperchild) {
    slot.retiring = true;  // its stop frame goes once it has answered them (route())
  }
}

void pool_impl::append_stop_locked(worker_slot& slot) {
  append_stop(slot.outbox);
  slot.accepting = false;
}

void pool_impl::flush_outbox_locked(worker_slot& slot) {
  if (slot.outbox.empty()) return;
  try {
    slot.channel.write_all(slot.outbox.data(), slot.outbox.size(), slot.outbox_attached);
  } catch (const std::exception&) {
    // Usually the worker is gone. If it is not (the frames, or the descriptors riding with
    // them, could not be sent: ETOOMANYREFS, EMFILE), it would never answer what it was sent:
    // it is ended, and its supervisor sees the end of stream and re-routes its tasks.
    slot.child.kill();
  }
  slot.outbox.clear();
  slot.outbox_attached.clear();
}

void pool_impl::record_task_time_locked(std::uint32_t elapsed_us) {
  const double sample = elapsed_us;
  average_task_us_ = average_task_us_ < 0 ? sample : 0.8 * average_task_us_ + 0.2 * sample;
  // The answer to a short task comes within about one wake-up; a supervisor still awake to
  // read it spares the waiting caller one of the three wake-ups on its path (worker,
  // supervisor, caller), leaving the two a plain pipe round trip has. Zero for long or
  // unknown tasks: nothing to gain there.
  const int watch = average_task_us_ >= 50 ? 0 : 60 + static_cast<int>(2 * average_task_us_);
  watch_us_.store(watch, std::memory_order_relaxed);
}

// ---- settling ---------------------------------------------------------------------------------

void pool_impl::fail_later_locked(task t, std::exception_ptr error) {
  deferred_.push_back({std::move(t.state), t.part, {{}, {}, 0, std::move(error)}});
}

/// Settles what was deferred; takes the lock back before returning.
void pool_impl::settle_deferred(std::unique_lock<std::mutex>& lock) {
  if (deferred_.empty()) return;
  std::vector<settlement> batch;
  batch.swap(deferred_);
  lock.unlock();
  settle_all(batch);
  lock.lock();
}

/// Records outcomes in their states (without the pool's lock), then runs the callbacks that
/// completed states released.
void pool_impl::settle_all(std::vector<settlement>& batch) {
  if (batch.empty()) return;
  std::vector<std::function<void()>> callbacks;
  for (auto& s : batch) {
    auto more = s.state->settle(s.part, std::move(s.result), s.cancelled);
    for (auto& callback : more)
      callbacks.push_back(std::move(callback));
  }
  {
    // Counted as done before any callback runs: a callback may close and join (or drop)
    // the pool, which waits for this count to reach zero.
    std::lock_guard<std::mutex> lock(mutex_);
    outstanding_ -= batch.size();
    if (outstanding_ == 0) {
      if (stop_requested_) {
        stop_idle_workers_locked();
        rebalance_.notify_all();
      }
      changed_.notify_all();
    }
  }
  for (auto& callback : callbacks)
    callback();  // async_result::then guards each one
}

/// After join() (or a destructor) asked for it: once nothing is outstanding, every worker
/// gets its stop frame and the supervisors end.
void pool_impl::request_stop_locked() {
  stop_requested_ = true;
  if (outstanding_ == 0) stop_idle_workers_locked();
  changed_.notify_all();
  rebalance_.notify_all();
}

void pool_impl::stop_idle_workers_locked() {
  for (auto& s : slots_) {
    if (!s->accepting) continue;
    append_stop_locked(*s);
    flush_outbox_locked(*s);
  }
}

/// Marks the pool broken: every queued and running task fails with `error`, every worker
/// is killed, nothing is restarted, later submits throw it.
void pool_impl::break_locked(std::exception_ptr error) {
  if (broken_) return;
  broken_ = error;
  fail_everything_locked(error);
  for (auto& s : slots_)
    s->child.kill();
  changed_.notify_all();
  rebalance_.notify_all();
}

void pool_impl::fail_everything_locked(const std::exception_ptr& error) {
  stranded_since_.reset();
  for (auto& t : pending_) {
    if (!t.cancelled) fail_later_locked(std::move(t), error);
  }
  pending_.clear();
  cancelled_queued_ = 0;
  for (auto& s : slots_) {
    for (auto& t : s->in_flight)
      fail_later_locked(std::move(t), error);
    s->in_flight.clear();
    s->in_flight_count.store(0, std::memory_order_relaxed);
    s->in_flight_bytes = 0;
    s->accepting = false;
  }
}

}  // namespace multiproc::detail
