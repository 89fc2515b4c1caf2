// Cancelling tasks that have not started: async_result::cancel() and
// pool::close(mp::cancel_pending) (see pool_impl.hpp for the state and its locks).
//
// A task has not started while it waits in the pool's queue, or, once sent to a worker, until
// the worker claims it in its claim word (protocol/ledger.hpp). A task in a worker's channel is
// taken back the way the rebalancer takes back stranded ones (rebalance.cpp) and then cancelled
// from the queue; the claim word's compare-and-swap decides each race with the worker, so a
// task is either cancelled or runs, never both. A worker without a claim word holds one task
// at a time and runs it as soon as it reads it: that task counts as started.
//
// A cancelled task leaves an empty husk in the queue (a deque cannot lose a middle element
// cheaply); dispatch drops husks, and the queue is compacted once husks are half of it.
#include <algorithm>

#include <multiproc/errors.hpp>

#include "pool_impl.hpp"

namespace multiproc::detail {

namespace {
std::exception_ptr cancellation(const char* why) {
  return std::make_exception_ptr(cancelled_error(why));
}
}  // namespace

bool pool_impl::cancel(result_state& state) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!owned_by_this_process()) return false;  // a forked copy: the workers are not ours
  bool took_back = false;
  for (auto& s : slots_) {
    if (!s->ledger || s->taken_back != 0) continue;
    const std::uint64_t last_claimed = s->ledger->last_claimed();
    const bool holds_unstarted = std::any_of(
        s->in_flight.begin(), s->in_flight.end(),
        [&](const task& t) { return t.state.get() == &state && t.number > last_claimed; });
    if (!holds_unstarted) continue;
    take_back_locked(*s);
    took_back = true;
  }
  std::size_t cancelled = 0;
  std::exception_ptr error;
  for (std::size_t part = 0; part < state.parts(); ++part) {
    // Keys are never reused: a part whose task has left the queue finds none with its key.
    const std::int64_t key = state.queue_key(part);
    if (key == 0) continue;
    const auto it =
        std::lower_bound(pending_.begin(), pending_.end(), key,
                         [](const task& t, std::int64_t wanted) { return t.queue_key < wanted; });
    if (it == pending_.end() || it->queue_key != key || it->cancelled) continue;
    if (!error) error = cancellation("async_result: the task was cancelled before it started");
    it->state->waiting_bytes -= it->encoded_bytes;
    deferred_.push_back({std::move(it->state), it->part, {{}, {}, 0, error}, true});
    cancel_queued_locked(*it);
    ++cancelled;
  }
  if (cancelled != 0 || took_back) {
    // Tasks of other results that were taken back with these go to whoever is free.
    dispatch_locked();
    if (paced_submitters_ != 0) changed_.notify_all();
    settle_deferred(lock);
  }
  lock.unlock();
  return cancelled != 0 || state.cancelled();
}

std::size_t pool_impl::close_cancelling_pending() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (phase_ == phase::running) phase_ = phase::closed;
  // Terminated or broken: every task has failed already.
  if (phase_ == phase::terminating || broken_ || !owned_by_this_process()) return 0;
  cancelling_pending_ = true;
  for (auto& s : slots_)
    take_back_locked(*s);
  const std::exception_ptr error =
      cancellation("pool: the task was cancelled by close(mp::cancel_pending)");
  std::size_t cancelled = 0;
  for (auto& t : pending_) {
    if (t.cancelled) continue;
    t.state->waiting_bytes -= t.encoded_bytes;
    deferred_.push_back({std::move(t.state), t.part, {{}, {}, 0, error}, true});
    ++cancelled;
  }
  // Destroyed here, under the lock, as a task that leaves the pool always is: their handles
  // close and their tickets stop counting their receivers.
  pending_.clear();
  cancelled_queued_ = 0;
  changed_.notify_all();  // paced submitters cancel what they have yet to queue
  settle_deferred(lock);
  return cancelled;
}

/// Empties a queued task whose state was moved to its cancellation: what it held (its body,
/// block, handles and tickets) goes now; the husk stays in the queue until dropped.
void pool_impl::cancel_queued_locked(task& t) {
  t.cancelled = true;
  t.state.reset();
  t.body = std::string();
  t.block = os::shared_block();
  t.handles.clear();
  t.tickets.clear();
  ++cancelled_queued_;
  drop_cancelled_locked();
}

/// Drops husks from both ends of the queue, and compacts it once they are half of it, so
/// cancelling n queued tasks in any order costs O(n log n), and nothing waits behind husks.
void pool_impl::drop_cancelled_locked() {
  if (cancelled_queued_ == 0) return;
  while (!pending_.empty() && pending_.front().cancelled) {
    pending_.pop_front();
    --cancelled_queued_;
  }
  while (!pending_.empty() && pending_.back().cancelled) {
    pending_.pop_back();
    --cancelled_queued_;
  }
  if (cancelled_queued_ * 2 > pending_.size()) {
    std::erase_if(pending_, [](const task& t) { return t.cancelled; });
    cancelled_queued_ = 0;
  }
}

bool state_cancel(result_state& state) {
  if (state.ready()) return state.cancelled();
  const std::shared_ptr<pool_impl> pool = state.pool().lock();
  // No pool: it settled every part before it went.
  if (!pool) return state.cancelled();
  return pool->cancel(state);
}

}  // namespace multiproc::detail
