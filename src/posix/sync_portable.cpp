// Synchronisation between processes with portable POSIX only (see src/os/sync.hpp): what macOS
// and the BSDs get, and what MULTIPROC_POSIX_PORTABLE builds on Linux so it is tested there.
// macOS has no robust mutexes, no pthread_mutex_timedlock, no futex and no process-shared
// unnamed semaphores (sem_init fails there), so the lock is a word in the shared memory that
// names its holder (pid and a per-process ticket), taken by compare-and-swap; a holder that
// died is found by asking the system whether its pid still runs. Sleeping goes through a
// process-shared pthread mutex and condition variable (the "doorbell"), which both macOS and
// Linux support in memory mapped at different addresses. Everything lives in the shared memory:
// nothing to pass but the memory, on fork and on spawn alike.
//
// What this costs against the Linux build: a dead holder is noticed when a waiter next looks
// (at most max_slice later), not at once by the kernel; and a process killed inside the
// doorbell's few-instruction critical section (never the user's critical section, which is
// the lock word's) leaves the doorbell held, which pthread cannot repair without robust mutexes.
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <new>
#include <system_error>

#include "../os/sync.hpp"

namespace multiproc::detail::os {

namespace {

using clock = std::chrono::steady_clock;

// macOS: pthread_mutex_t is 64 bytes and pthread_cond_t 48, so the words fit in 16.
struct state {
  /// 0 when free; else (pid << 32) | ticket, the ticket unique per acquisition in that process,
  /// so a holder seen dead is replaced by compare-and-swap only if it still holds the lock.
  std::atomic<std::uint64_t> owner;
  /// Bumped by every wake_all(); sleepers in wait() sleep until it moves.
  std::atomic<std::uint32_t> sequence;
  /// Who sleeps on the doorbell, counted under it: lock waiters in the low bits, wait()
  /// sleepers above them, and a flag set by wake_all() so that unlock() rings.
  std::atomic<std::uint32_t> waiting;
  pthread_mutex_t doorbell;
  pthread_cond_t ring;
};
static_assert(sizeof(state) <= shared_sync::memory_size);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

constexpr std::uint32_t one_lock_waiter = 1;
constexpr std::uint32_t lock_waiter_mask = (1u << 15) - 1;
constexpr std::uint32_t one_sleeper = 1u << 15;
constexpr std::uint32_t sleeper_mask = ((1u << 15) - 1) << 15;
constexpr std::uint32_t wake_pending = 1u << 31;

/// A waiter looks at the holder's pid this often at most, so a dead holder is replaced within
/// it; the first looks come sooner, since most waits are short.
constexpr auto first_slice = std::chrono::milliseconds(1);
constexpr auto max_slice = std::chrono::milliseconds(50);
constexpr int spins_before_sleep = 200;

state& state_at(void* memory) {
  return *static_cast<state*>(memory);
}

std::atomic<std::uint32_t> tickets{0};

std::uint64_t my_owner_word() noexcept {
  // The cached pid (reset in forked children): getpid() is a system call, once per lock.
  const auto pid = static_cast<std::uint64_t>(static_cast<std::uint32_t>(this_process_stamp().pid));
  return (pid << 32) | tickets.fetch_add(1, std::memory_order_relaxed);
}

/// Whether the process that holds `word` has ended. A child of this process that ended but is
/// not reaped yet still answers kill(); waitid(WNOWAIT) tells it has ended without reaping it.
bool holder_ended(std::uint64_t word) noexcept {
  const auto pid = static_cast<pid_t>(word >> 32);
  if (pid == ::getpid()) return false;  // another thread of ours: alive by definition
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
         info.si_pid == pid;
}

/// The condition variable's clock is the realtime one (macOS cannot change it): only slices
/// are measured with it, the caller's timeout is kept on the steady clock.
timespec realtime_after(std::chrono::nanoseconds span) {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  const auto total = std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec) +
                     std::max(span, std::chrono::nanoseconds::zero());
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(total);
  return {static_cast<time_t>(seconds.count()), static_cast<long>((total - seconds).count())};
}

/// Sleeps on the doorbell for at most `span` while `keep_sleeping()` (checked under it, after
/// `count` was added to `waiting`, so a ring after that check cannot be missed).
template <class Predicate>
void sleep_on_doorbell(state& s, std::uint32_t count, std::chrono::nanoseconds span,
                       Predicate keep_sleeping) {
  if (const int rc = pthread_mutex_lock(&s.doorbell); rc != 0) {
    throw std::system_error(rc, std::generic_category(), "multiproc: a shared object's doorbell");
  }
  s.waiting.fetch_add(count);
  if (keep_sleeping()) {
    const timespec until = realtime_after(span);
    pthread_cond_timedwait(&s.ring, &s.doorbell, &until);  // ETIMEDOUT: the caller looks again
  }
  s.waiting.fetch_sub(count);
  pthread_mutex_unlock(&s.doorbell);
}

void ring(state& s) noexcept {
  pthread_mutex_lock(&s.doorbell);
  pthread_cond_broadcast(&s.ring);
  pthread_mutex_unlock(&s.doorbell);
}

}  // namespace

shared_sync shared_sync::create(void* memory) {
  auto* s = new (memory) state;
  s->owner.store(0);
  s->sequence.store(0);
  s->waiting.store(0);
  pthread_mutexattr_t mutex_attributes;
  pthread_mutexattr_init(&mutex_attributes);
  pthread_mutexattr_setpshared(&mutex_attributes, PTHREAD_PROCESS_SHARED);
  int rc = pthread_mutex_init(&s->doorbell, &mutex_attributes);
  pthread_mutexattr_destroy(&mutex_attributes);
  if (rc != 0) throw std::system_error(rc, std::generic_category(), "multiproc: shared lock");
  pthread_condattr_t cond_attributes;
  pthread_condattr_init(&cond_attributes);
  pthread_condattr_setpshared(&cond_attributes, PTHREAD_PROCESS_SHARED);
  rc = pthread_cond_init(&s->ring, &cond_attributes);
  pthread_condattr_destroy(&cond_attributes);
  if (rc != 0) throw std::system_error(rc, std::generic_category(), "multiproc: shared lock");
  return adopt(memory, {});
}

shared_sync::outcome shared_sync::lock(std::optional<std::chrono::nanoseconds> timeout) {
  auto& s = state_at(memory_);
  const std::uint64_t mine = my_owner_word();
  std::uint64_t seen = 0;
  for (int i = 0; i < spins_before_sleep; ++i) {
    seen = 0;
    if (s.owner.compare_exchange_weak(seen, mine)) return outcome::acquired;
    cpu_relax();
  }
  const auto deadline = timeout ? clock::now() + *timeout : clock::time_point::max();
  std::chrono::nanoseconds slice = first_slice;
  for (;;) {
    seen = 0;
    if (s.owner.compare_exchange_strong(seen, mine)) return outcome::acquired;
    // The holder died inside its critical section: the lock is ours if it still names that
    // holder; whoever holds it now decides what the half-done state means.
    if (holder_ended(seen) && s.owner.compare_exchange_strong(seen, mine)) {
      return outcome::acquired_owner_died;
    }
    const auto now = clock::now();
    if (now >= deadline) return outcome::timed_out;
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
    sleep_on_doorbell(s, one_lock_waiter, std::min(slice, left),
                      [&] { return s.owner.load() == seen; });
    slice = std::min<std::chrono::nanoseconds>(slice * 2, max_slice);
  }
}

void shared_sync::unlock() noexcept {
  auto& s = state_at(memory_);
  s.owner.store(0);
  // After the store: a waiter counted before it is ringed; one counted after it sees the lock
  // free under the doorbell and does not sleep.
  const std::uint32_t waiting = s.waiting.fetch_and(~wake_pending);
  if ((waiting & (wake_pending | lock_waiter_mask)) != 0) ring(s);
}

shared_sync::outcome shared_sync::wait(std::optional<std::chrono::nanoseconds> timeout) {
  auto& s = state_at(memory_);
  const std::uint32_t seen = s.sequence.load();
  unlock();
  // A wake-up that comes within the spin costs no system call on either side.
  bool woken = false;
  for (int i = 0; i < spins_before_sleep && !woken; ++i) {
    cpu_relax();
    woken = s.sequence.load() != seen;
  }
  if (!woken) {
    // Spurious returns are allowed, so one sleep does: the caller looks at its condition.
    const auto span = timeout ? *timeout : std::chrono::nanoseconds(std::chrono::seconds(1));
    sleep_on_doorbell(s, one_sleeper, span, [&] { return s.sequence.load() == seen; });
  }
  return lock(std::nullopt);
}

void shared_sync::wake_all() noexcept {
  auto& s = state_at(memory_);
  s.sequence.fetch_add(1);
  // A sleeper counted after this look saw the sequence move under the doorbell and woke.
  if ((s.waiting.load() & sleeper_mask) != 0) s.waiting.fetch_or(wake_pending);
}

}  // namespace multiproc::detail::os
