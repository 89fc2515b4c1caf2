// Rebalancing: a pool that learned its tasks are tiny sends each worker several at once (one
// wake-up serves a batch). If one of them then runs long -- or blocks, waiting for a task
// queued behind it -- the tasks behind it must not wait while another worker is idle. The
// claim ledger (protocol/ledger.hpp) says which tasks a worker has started; the rebalancer
// takes back the others once an idle worker has watched them wait for longer than a small
// bound, and dispatch hands them to whoever is free. Nothing runs twice: a task taken back is
// one its worker can no longer claim.
#include <algorithm>

#include "../launcher.hpp"
#include "pool_impl.hpp"

namespace multiproc::detail {

namespace {
using std::chrono::microseconds;
/// How long an idle worker may watch tasks wait elsewhere: a few times the measured task
/// time, at least 1 ms (tiny tasks queued behind a tiny task finish sooner than that) and at
/// most 10 ms.
constexpr microseconds shortest_bound{1000};
constexpr microseconds longest_bound{10000};
}  // namespace

microseconds pool_impl::stranding_bound_locked() const {
  if (average_task_us_ < 0) return longest_bound;
  const auto few_tasks = microseconds(static_cast<long long>(4 * average_task_us_));
  return std::clamp(few_tasks, shortest_bound, longest_bound);
}

/// A worker that may take work has none, while another holds tasks it has not started behind
/// one it has (running, or done with its answer on the way).
bool pool_impl::stranded_locked() const {
  bool idle = false;
  bool holding = false;
  for (const auto& s : slots_) {
    if (s->taken_back != 0) continue;
    if (s->accepting && s->in_flight.empty()) idle = true;
    if (s->ledger && s->in_flight.size() >= 2 &&
        s->in_flight.back().number > s->ledger->last_claimed()) {
      holding = true;
    }
  }
  return idle && holding;
}

/// Called whenever work moves (dispatch_locked): starts the clock when tasks become stranded,
/// stops it when they are not, and wakes the rebalancer (started the first time it is needed).
void pool_impl::note_stranding_locked() {
  if (!stranded_locked()) {
    stranded_since_.reset();
    return;
  }
  if (stranded_since_) return;
  stranded_since_ = std::chrono::steady_clock::now();
  if (!rebalancer_.joinable() && phase_ != phase::terminating && !broken_) {
    try {
      rebalancer_ = std::thread([self = shared_from_this()] { self->rebalance(); });
      ++live_threads_;
    } catch (const std::system_error&) {
      // No thread: the tasks wait for their worker as they would have before rebalancing.
    }
  }
  rebalance_.notify_all();
}

/// The rebalancer's thread: waits for stranded tasks to be older than the bound, then takes
/// back every unstarted task from the workers that hold some. Like a supervisor, it may settle
/// failures and so run callbacks: it counts as one of the pool's threads.
void pool_impl::rebalance() {
  const own_thread library_thread;
  set_supervised_pool(this);
  std::unique_lock<std::mutex> lock(mutex_);
  while (phase_ != phase::terminating && !broken_ && !(stop_requested_ && outstanding_ == 0)) {
    if (!stranded_since_) {
      rebalance_.wait(lock);
      continue;
    }
    const auto due = *stranded_since_ + stranding_bound_locked();
    if (std::chrono::steady_clock::now() < due) {
      rebalance_.wait_until(lock, due);
      continue;
    }
    stranded_since_.reset();
    if (!stranded_locked()) continue;
    for (auto& s : slots_)
      take_back_locked(*s);
    dispatch_locked();
    settle_deferred(lock);
  }
  --live_threads_;
  changed_.notify_all();
  set_supervised_pool(nullptr);
}

/// Holds `slot`'s worker and moves every task it has not claimed back to the front of the
/// queue, in order. The worker answers each of their frames with `skipped`; until it has
/// answered them all it gets nothing new (skipped_locked()).
void pool_impl::take_back_locked(worker_slot& slot) {
  if (!slot.ledger || slot.taken_back != 0 || slot.in_flight.empty()) return;
  if (slot.in_flight.back().number <= slot.ledger->last_claimed()) return;
  const std::uint64_t last_started = slot.ledger->hold();
  std::vector<task> taken;
  while (!slot.in_flight.empty() && slot.in_flight.back().number > last_started) {
    task t = std::move(slot.in_flight.back());
    slot.in_flight.pop_back();
    slot.in_flight_bytes -= t.wire_size();
    t.state->waiting_bytes += t.encoded_bytes;
    t.returned();
    taken.push_back(std::move(t));
  }
  slot.in_flight_count.store(slot.in_flight.size(), std::memory_order_relaxed);
  // `taken` runs newest first: pushing each to the front restores the order they were sent in.
  for (auto& t : taken)
    requeue_front_locked(std::move(t));
  slot.taken_back = taken.size();
  slot.tasks_kept -= std::min(slot.tasks_kept, taken.size());
  if (slot.tasks_kept < options_.maxtasksperchild) slot.retiring = false;
  // It claimed them all meanwhile: nothing to wait for.
  if (slot.taken_back == 0) slot.ledger->release();
}

/// Gives `slot`'s worker its claim word, before the second task it is to hold: the word starts
/// at the tasks sent so far (each counts as claimed), and the ledger frame goes ahead of that
/// task. The pool's ledger block is made on first use. False if there can be none here: then
/// every worker holds one task at a time.
bool pool_impl::give_ledger_locked(worker_slot& slot) {
  if (ledger_unavailable_ || slot.ledger_refused) return false;
  try {
    if (!ledger_) ledger_ = os::shared_block::create(slots_.size() * ledger_stride);
  } catch (const std::exception&) {
    ledger_unavailable_ = true;  // no shared memory here: one task per worker, for good
    return false;
  }
  const std::size_t attached_before = slot.outbox_attached.size();
  try {
    const std::uint64_t token = ledger_.export_to_child(slot.child, slot.outbox_attached);
    claim_word word(ledger_.data() + slot.ledger_offset);
    word.start_at(slot.tasks_sent);
    append_ledger(slot.outbox, {token, ledger_.size(), slot.ledger_offset});
    slot.ledger = word;
    return true;
  } catch (const std::exception&) {
    // This worker only (it may have just died): one task at a time until it is replaced.
    slot.outbox_attached.resize(attached_before);
    slot.ledger_refused = true;
    return false;
  }
}

/// A `skipped` frame: one more task taken back that its worker will not run. After the last
/// one the worker may claim again.
void pool_impl::skipped_locked(worker_slot& slot) {
  if (slot.taken_back == 0) return;  // a stale answer (the worker was replaced meanwhile)
  if (--slot.taken_back == 0) {
    slot.ledger->release();
    dispatch_locked();
  }
}

}  // namespace multiproc::detail
