// mp::condition and mp::barrier: each a primitive's state in shared memory (sync_state.hpp)
// with its waiters asleep on the one os::shared_sync under it. A condition's waiters hold
// numbered slots in its shared memory, so notify(n) wakes the n oldest, in any process, and a
// waiter that died waiting passes its notification on.
#include <multiproc/synchronize.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "../../os/sync.hpp"
#include "shared_object.hpp"
#include "sync_state.hpp"

namespace multiproc {

using detail::sync_kind;

// ---- condition ----------------------------------------------------------------------------

namespace {
/// Throws state_error unless this thread holds the mutex `lock`.
void require_held(detail::sync_core& lock, const char* what) {
  if (lock.state().owner.load() != detail::self_word()) {
    throw state_error(std::string("mp::condition::") + what +
                      ": the lock is not held by this thread");
  }
}
}  // namespace

condition::condition() : sync_handle(0), lock_(recursive_mutex().detail_core()) {}
condition::condition(const mutex& lock) : sync_handle(0), lock_(lock.detail_core()) {}
condition::condition(const recursive_mutex& lock) : sync_handle(0), lock_(lock.detail_core()) {}

bool condition::wait_for_ns(detail::optional_ns timeout) {
  auto& lock = *lock_;
  require_held(lock, "wait");
  auto& s = core_->state();
  // 1. Take a ticket and a slot, before the lock is released: a notify() from then on counts
  //    this waiter.
  detail::condition_slot* slot = nullptr;
  {
    detail::shared_lock guard(core_->object());
    for (auto& candidate : detail::slots_of(s)) {
      if (candidate.ticket == 0) {
        slot = &candidate;
        break;
      }
    }
    if (slot == nullptr) throw std::length_error("mp::condition: more than 128 waiters at once");
    const auto self = detail::os::this_process_stamp();
    *slot = {++s.next_ticket, 0, self.pid, self.started};
  }
  // 2. Release the lock, every level of it.
  auto& ls = lock.state();
  const std::uint64_t depth = ls.kind == sync_kind::recursive_mutex ? ls.depth : 0;
  ls.depth = 0;
  detail::sync_release(lock);
  // 3. Sleep until notified or the deadline.
  bool notified = false;
  {
    const auto deadline = detail::deadline_of(timeout);
    detail::shared_lock guard(core_->object());
    detail::counted_waiter counted(s);
    for (;;) {
      if (slot->notified != 0) {
        notified = true;
        break;
      }
      if (detail::expired(deadline)) break;
      guard.wait(detail::next_wait(deadline));
    }
    *slot = {};
  }
  // 4. Take the lock back, at its depth.
  (void)detail::sync_acquire(lock, std::nullopt);
  if (ls.kind == sync_kind::recursive_mutex) ls.depth = depth;
  return notified;
}

void condition::notify(std::size_t n) {
  require_held(*lock_, "notify");
  auto& s = core_->state();
  detail::shared_lock guard(core_->object());
  bool woke = false;
  while (n > 0) {
    detail::condition_slot* oldest = nullptr;
    for (auto& slot : detail::slots_of(s)) {
      if (slot.ticket != 0 && slot.notified == 0 && (!oldest || slot.ticket < oldest->ticket))
        oldest = &slot;
    }
    if (oldest == nullptr) break;
    if (!detail::os::still_running({oldest->pid, oldest->started})) {
      *oldest = {};  // a waiter that died waiting: its notification goes to the next
      continue;
    }
    oldest->notified = 1;
    woke = true;
    --n;
  }
  if (woke) core_->object().sync().wake_all();
}

void condition::notify_all() {
  notify(std::numeric_limits<std::size_t>::max());
}

// ---- barrier ------------------------------------------------------------------------------

barrier::barrier(std::size_t parties)
    : sync_handle(parties == 0 ? throw std::invalid_argument("mp::barrier: no parties")
                               : static_cast<std::int64_t>(parties)) {}

std::size_t barrier::wait_for_ns(detail::optional_ns timeout) {
  auto& s = core_->state();
  const auto deadline = detail::deadline_of(timeout);
  detail::shared_lock guard(core_->object());
  if (s.broken != 0) throw broken_barrier_error("mp::barrier: broken");
  const std::size_t index = static_cast<std::size_t>(s.arrived++);
  const std::uint64_t round = s.generation;
  if (s.arrived == static_cast<std::uint64_t>(s.maximum)) {
    s.arrived = 0;
    s.reset_rounds &= ~(std::uint64_t{1} << (round % 64));
    ++s.generation;
    core_->object().sync().wake_all();
    return index;
  }
  detail::counted_waiter counted(s);
  for (;;) {
    if (s.generation != round) {
      if ((s.reset_rounds >> (round % 64)) & 1) {
        throw broken_barrier_error("mp::barrier: reset while waiting");
      }
      return index;
    }
    if (s.broken != 0) {
      if (s.arrived > 0) --s.arrived;
      throw broken_barrier_error("mp::barrier: broken while waiting");
    }
    if (detail::expired(deadline)) {
      s.broken = 1;
      if (s.arrived > 0) --s.arrived;
      core_->object().sync().wake_all();
      throw broken_barrier_error("mp::barrier: wait timed out (the barrier is broken)");
    }
    guard.wait(detail::next_wait(deadline));
  }
}

void barrier::abort() {
  detail::shared_lock guard(core_->object());
  core_->state().broken = 1;
  core_->object().sync().wake_all();
}

void barrier::reset() {
  auto& s = core_->state();
  detail::shared_lock guard(core_->object());
  if (s.arrived > 0 && s.broken == 0) {
    s.reset_rounds |= std::uint64_t{1} << (s.generation % 64);
    ++s.generation;
  }
  s.arrived = 0;
  s.broken = 0;
  core_->object().sync().wake_all();
}

std::size_t barrier::parties() const {
  return static_cast<std::size_t>(core_->state().maximum);
}

std::size_t barrier::n_waiting() const {
  detail::shared_lock guard(core_->object());
  const auto& s = core_->state();
  return s.broken != 0 ? 0 : static_cast<std::size_t>(s.arrived);
}

bool barrier::broken() const {
  detail::shared_lock guard(core_->object());
  return core_->state().broken != 0;
}

}  // namespace multiproc
