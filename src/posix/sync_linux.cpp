// Synchronisation between processes on Linux (see src/os/sync.hpp): a robust, process-shared
// pthread mutex (a holder's death is reported to the next one, EOWNERDEAD) and a futex word to
// sleep on. Both live in the shared memory itself: nothing to pass but the memory.
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <new>
#include <system_error>

#include "../os/sync.hpp"

namespace multiproc::detail::os {

namespace {

struct state {
  pthread_mutex_t mutex;
  /// Bumped by every wake_all(); sleepers wait on it with FUTEX_WAIT.
  std::atomic<std::uint32_t> sequence;
  /// Processes asleep on the futex in wait() (counted around the call, outside the mutex), so
  /// unlock() makes the wake-up call only when someone sleeps.
  std::atomic<std::uint32_t> sleepers;
  /// Set by wake_all() under the mutex; the system call is made by unlock(), after the mutex
  /// is released, so that the woken find it free rather than sleep again on it at once.
  std::atomic<std::uint32_t> wake_pending;
  /// 1 while someone holds the mutex (set after taking it, cleared before giving it back), so
  /// a spinning locker reads until it looks free instead of hammering the mutex's word with
  /// failed trylocks, each a write to the line its holder needs.
  std::atomic<std::uint32_t> held;
  /// Processes in wait() (spinning or asleep), counted under the mutex: wake_all() moves the
  /// sequence only when one is there to see it.
  std::atomic<std::uint32_t> waiting;
};
static_assert(sizeof(state) <= shared_sync::memory_size);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

state& state_at(void* memory) {
  return *static_cast<state*>(memory);
}

/// Waking a process asleep on another CPU costs tens of microseconds on the machines this
/// runs on (a cross-CPU wake-up), more than most critical sections and most waits for a
/// message take: a process spins up to this long on the lock or for a wake-up before it
/// sleeps. But a spin only pays while the other side runs on another CPU: when both share one
/// (a busy machine), the spin is time the other side cannot use. So the spin adapts, per
/// process and object: it grows while spins succeed and halves (down to none, with a short
/// probe now and then) while they fail.
constexpr std::int32_t spin_limit_ns = 20000;
constexpr std::int32_t probe_spin_ns = 2000;
constexpr std::uint32_t probe_every = 16;

/// Spins until `done()` or for the spin's current budget; true if done. Adapts the budget.
template <class Done>
bool spin_until(shared_sync::spin_budget& budget, Done done) noexcept {
  if (done()) return true;  // the common case: no clock read at all
  std::int32_t allowed = budget.nanoseconds.load(std::memory_order_relaxed);
  if (allowed == 0) {
    if (budget.skipped.fetch_add(1, std::memory_order_relaxed) % probe_every != 0) return false;
    allowed = probe_spin_ns;
  }
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::nanoseconds(allowed);
  for (unsigned i = 1;; ++i) {
    cpu_relax();
    if (done()) {
      budget.nanoseconds.store(std::min(spin_limit_ns, allowed + allowed / 2 + 1000),
                               std::memory_order_relaxed);
      return true;
    }
    if (i % 64 == 0 && std::chrono::steady_clock::now() >= give_up) {
      budget.nanoseconds.store(allowed / 2 < 1000 ? 0 : allowed / 2, std::memory_order_relaxed);
      return false;
    }
  }
}

timespec monotonic_after(std::chrono::nanoseconds timeout) {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  const auto total = std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec) +
                     std::max(timeout, std::chrono::nanoseconds::zero());
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(total);
  return {static_cast<time_t>(seconds.count()), static_cast<long>((total - seconds).count())};
}

timespec relative(std::chrono::nanoseconds timeout) {
  timeout = std::max(timeout, std::chrono::nanoseconds::zero());
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(timeout);
  return {static_cast<time_t>(seconds.count()), static_cast<long>((timeout - seconds).count())};
}

shared_sync::outcome interpret(int rc, pthread_mutex_t& mutex) {
  switch (rc) {
    case 0:
      return shared_sync::outcome::acquired;
    case EOWNERDEAD:
      // The holder died inside its critical section: the lock is ours, and usable again once
      // marked consistent; whoever holds it now decides what the half-done state means.
      pthread_mutex_consistent(&mutex);
      return shared_sync::outcome::acquired_owner_died;
    case ETIMEDOUT:
      return shared_sync::outcome::timed_out;
    default:
      throw std::system_error(rc, std::generic_category(), "multiproc: locking a shared object");
  }
}

}  // namespace

shared_sync shared_sync::create(void* memory) {
  auto* s = new (memory) state;
  pthread_mutexattr_t attributes;
  pthread_mutexattr_init(&attributes);
  pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
  const int rc = pthread_mutex_init(&s->mutex, &attributes);
  pthread_mutexattr_destroy(&attributes);
  if (rc != 0) throw std::system_error(rc, std::generic_category(), "multiproc: shared lock");
  s->sequence.store(0);
  s->sleepers.store(0);
  s->wake_pending.store(0);
  s->held.store(0);
  s->waiting.store(0);
  return adopt(memory, {});
}

shared_sync::outcome shared_sync::lock(std::optional<std::chrono::nanoseconds> timeout) {
  auto& s = state_at(memory_);
  // glibc's robust mutexes sleep at the first collision: spin a little on trylock first.
  int tried = EBUSY;
  outcome got;
  if (spin_until(*spin_, [&] {
        return s.held.load(std::memory_order_relaxed) == 0 &&
               (tried = pthread_mutex_trylock(&s.mutex)) != EBUSY;
      })) {
    got = interpret(tried, s.mutex);
  } else if (!timeout) {
    got = interpret(pthread_mutex_lock(&s.mutex), s.mutex);
  } else {
    const timespec deadline = monotonic_after(*timeout);
    got = interpret(pthread_mutex_clocklock(&s.mutex, CLOCK_MONOTONIC, &deadline), s.mutex);
  }
  if (got != outcome::timed_out) s.held.store(1, std::memory_order_relaxed);
  return got;
}

void shared_sync::unlock() noexcept {
  auto& s = state_at(memory_);
  const bool wake =
      s.wake_pending.load(std::memory_order_relaxed) != 0 && s.wake_pending.exchange(0) != 0;
  s.held.store(0, std::memory_order_relaxed);
  pthread_mutex_unlock(&s.mutex);
  // A sleeper counted after this look had seen the sequence before wake_all() bumped it (it
  // read it under the mutex): its futex call returns at once.
  if (wake && s.sleepers.load() != 0) {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&s.sequence), FUTEX_WAKE, INT_MAX,
              nullptr, nullptr, 0);
  }
}

shared_sync::outcome shared_sync::wait(std::optional<std::chrono::nanoseconds> timeout) {
  auto& s = state_at(memory_);
  const std::uint32_t seen = s.sequence.load();
  s.waiting.fetch_add(1);
  unlock();
  // A wake-up that comes within the spin costs no system call on either side.
  if (!spin_until(*spin_, [&] { return s.sequence.load() != seen; })) {
    // Counted before the last look: a wake_all() after it sees a sleeper and makes the call;
    // one before it changed the sequence, and the futex returns at once. Not FUTEX_PRIVATE:
    // the word is in memory other processes map.
    s.sleepers.fetch_add(1);
    const timespec span = timeout ? relative(*timeout) : timespec{};
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&s.sequence), FUTEX_WAIT, seen,
              timeout ? &span : nullptr, nullptr, 0);
    s.sleepers.fetch_sub(1);
  }
  const outcome got = lock(std::nullopt);
  s.waiting.fetch_sub(1);
  return got;
}

void shared_sync::wake_all() noexcept {
  auto& s = state_at(memory_);
  // Under the mutex: a process in wait() counted itself before it let the mutex go.
  if (s.waiting.load(std::memory_order_relaxed) == 0) return;
  s.sequence.fetch_add(1);
  s.wake_pending.store(1);  // the call itself is made by unlock()
}

}  // namespace multiproc::detail::os
