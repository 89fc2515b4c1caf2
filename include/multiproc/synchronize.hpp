// multiproc — synchronisation between processes: mp::mutex, mp::recursive_mutex,
// mp::semaphore, mp::bounded_semaphore, mp::event, mp::condition, mp::barrier (Python's Lock,
// RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <multiproc/config.hpp>
#include <multiproc/detail/timeout.hpp>
#include <multiproc/errors.hpp>

namespace multiproc {

namespace detail {
class sync_core;
enum class sync_kind : std::uint32_t {
  mutex = 1,
  recursive_mutex = 2,
  semaphore = 3,
  bounded_semaphore = 4,
  event = 5,
  condition = 6,
  barrier = 7,
};
using optional_ns = std::optional<std::chrono::nanoseconds>;

/// The first words of every primitive's shared state: what an uncontended mp::mutex touches,
/// inline in the caller (no call into the library). Same layout in every process of one build.
struct sync_hot_words {
  std::uint32_t magic;
  sync_kind kind;
  /// Mutexes: (pid << 32 | thread number) of the holder, 0 when free.
  std::atomic<std::uint64_t> owner;
  /// Equal to owner once owner_started is the holder's (written after it).
  std::atomic<std::uint64_t> stamped;
  /// The holder's process start time (with its pid, names it across pid reuse).
  std::atomic<std::uint64_t> owner_started;
  /// Processes and threads counted in before they sleep: a releaser wakes them if non-zero.
  std::atomic<std::uint32_t> waiters;
};
/// Where a primitive's hot words are, once its shared memory exists (null before).
struct sync_hot {
  std::atomic<sync_hot_words*> words{nullptr};
};
/// Who the calling thread is, as a mutex's owner word says it, cached per thread.
struct sync_self {
  std::uint64_t word;
  std::uint64_t started;
  std::uint32_t generation;  // sync_fork_generation when filled; 0: never filled
};
/// Changes in every child forked from this process (POSIX), so a forked child's thread does
/// not keep its parent's identity.
MULTIPROC_API extern std::atomic<std::uint32_t> sync_fork_generation;
/// Fills `self` for the calling thread.
MULTIPROC_API void sync_refresh_self(sync_self& self) noexcept;
/// The calling thread's identity (its cache refreshed after a fork).
inline const sync_self& sync_this_thread() noexcept {
  static thread_local sync_self self{};
  if (self.generation != sync_fork_generation.load(std::memory_order_relaxed))
    sync_refresh_self(self);
  return self;
}
/// Takes a free mutex without a call into the library; false if it is not free or not made
/// yet (the caller then takes the full path, which waits).
inline bool sync_try_take_fast(const sync_hot& hot) noexcept {
  sync_hot_words* words = hot.words.load(std::memory_order_acquire);
  if (words == nullptr) return false;
  const sync_self& self = sync_this_thread();
  std::uint64_t free_word = 0;
  if (!words->owner.compare_exchange_strong(free_word, self.word)) return false;
  // The stamps name the holder for whoever checks that it still runs. A thread taking the lock
  // again finds them its own already and writes nothing.
  if (words->stamped.load(std::memory_order_relaxed) != self.word ||
      words->owner_started.load(std::memory_order_relaxed) != self.started) {
    words->owner_started.store(self.started, std::memory_order_relaxed);
    words->stamped.store(self.word, std::memory_order_release);
  }
  return true;
}
MULTIPROC_API sync_hot& sync_hot_of(sync_core& core);
/// After a release found the mutex free already: throws mp::state_error.
[[noreturn]] MULTIPROC_API void sync_release_unheld(sync_core& core);
/// After a release: wakes the waiters counted in.
MULTIPROC_API void sync_wake(sync_core& core);

MULTIPROC_API std::shared_ptr<sync_core> sync_make(sync_kind kind, std::int64_t value);
MULTIPROC_API std::string sync_export(sync_core& core);
MULTIPROC_API std::shared_ptr<sync_core> sync_import(sync_kind kind, const std::string& exported);
MULTIPROC_API bool sync_acquire(sync_core& core, optional_ns timeout);
MULTIPROC_API void sync_release(sync_core& core);
MULTIPROC_API sync_kind sync_kind_of(sync_core& core);

/// What every synchronisation handle shares: the core, and how it travels (cereal).
template <sync_kind Kind>
class sync_handle {
 public:
  template <class Archive>
  void save(Archive& archive) const {
    archive(sync_export(*core_));
  }
  template <class Archive>
  void load(Archive& archive) {
    std::string exported;
    archive(exported);
    core_ = sync_import(Kind, exported);
    hot_ = &sync_hot_of(*core_);
  }

 protected:
  explicit sync_handle(std::int64_t value)
      : core_(sync_make(Kind, value)), hot_(&sync_hot_of(*core_)) {}
  std::shared_ptr<sync_core> core_;
  sync_hot* hot_;  // in *core_

 public:
  /// The shared core (for the library: a condition takes its lock's).
  const std::shared_ptr<sync_core>& detail_core() const noexcept { return core_; }
};
}  // namespace detail

/// Python's multiprocessing.Lock: a lock between processes (and threads). A handle: copies
/// refer to the same lock; it travels as an argument of mp::process, of a pool task and of a
/// pool initializer, on every start method. Nothing is named: it lives in unnamed shared memory
/// and vanishes with the last handle in any process.
///
/// Not recursive: acquiring it again from the thread that holds it waits (as Python's). Any
/// process or thread may release it (Python's rule). If the holder's process ends without
/// releasing it, the next acquire() that notices throws mp::owner_died_error and leaves the
/// lock free (see there). Uncontended acquire and release touch only shared memory (no system
/// call); a waiter sleeps in the kernel (Linux: a futex; Windows: a semaphore), never spins for
/// long. lock()/try_lock()/try_lock_for()/unlock() make it a std Lockable, so std::lock_guard,
/// std::unique_lock and std::scoped_lock work.
class MULTIPROC_API mutex : public detail::sync_handle<detail::sync_kind::mutex> {
 public:
  /// A new, unlocked lock. Throws std::system_error if the shared memory cannot be made.
  mutex();
  /// Waits until the lock is free and takes it. Throws mp::owner_died_error (see the class).
  void acquire() {
    if (!detail::sync_try_take_fast(*hot_)) (void)detail::sync_acquire(*core_, std::nullopt);
  }
  /// As acquire(), waiting at most `timeout` (timeouts saturate as in mp::process::join
  /// (timeout): negative is zero, huge is forever); false if it was not free in time.
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return detail::sync_try_take_fast(*hot_) ||
           detail::sync_acquire(*core_, detail::optional_timeout(timeout));
  }
  /// Releases the lock, whoever holds it. Throws mp::state_error if it is not held.
  void release() {
    detail::sync_hot_words* words = hot_->words.load(std::memory_order_acquire);
    if (words == nullptr) detail::sync_release_unheld(*core_);  // never taken
    if (words->owner.exchange(0) == 0) detail::sync_release_unheld(*core_);
    if (words->waiters.load() != 0) detail::sync_wake(*core_);
  }
  /// std Lockable: acquire().
  void lock() { acquire(); }
  /// std Lockable: takes the lock if it is free now; false otherwise.
  bool try_lock() {
    return detail::sync_try_take_fast(*hot_) ||
           detail::sync_acquire(*core_, std::chrono::nanoseconds(0));
  }
  /// std TimedLockable: acquire(timeout).
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    return acquire(timeout);
  }
  /// std Lockable: release().
  void unlock() { release(); }
};

/// Python's multiprocessing.RLock: a lock its holder (one thread of one process) may take
/// again; it is free once released as many times as it was acquired. A handle, travelling as
/// mp::mutex does. Only its holder may release it (else mp::state_error). If the holder's
/// process ends holding it, the next acquire() that notices throws mp::owner_died_error and
/// leaves the lock free.
class MULTIPROC_API recursive_mutex
    : public detail::sync_handle<detail::sync_kind::recursive_mutex> {
 public:
  /// A new, unlocked lock. Throws std::system_error if the shared memory cannot be made.
  recursive_mutex();
  /// Takes the lock (again, if this thread holds it). Throws mp::owner_died_error.
  void acquire() { (void)detail::sync_acquire(*core_, std::nullopt); }
  /// As acquire(), waiting at most `timeout` (saturated as in join(timeout)); false on time-out.
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return detail::sync_acquire(*core_, detail::optional_timeout(timeout));
  }
  /// Releases one level. Throws mp::state_error if this thread does not hold it.
  void release() { detail::sync_release(*core_); }
  /// std Lockable: acquire().
  void lock() { acquire(); }
  /// std Lockable: takes the lock if this thread can now; false otherwise.
  bool try_lock() { return detail::sync_acquire(*core_, std::chrono::nanoseconds(0)); }
  /// std TimedLockable: acquire(timeout).
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    return acquire(timeout);
  }
  /// std Lockable: release().
  void unlock() { release(); }
};

/// Python's multiprocessing.Semaphore: a counter that acquire() decrements, waiting while it
/// is zero, and release() increments. A handle, travelling as mp::mutex does. A process that
/// ends after acquiring does not give its count back (as in Python).
class MULTIPROC_API semaphore : public detail::sync_handle<detail::sync_kind::semaphore> {
 public:
  /// A semaphore with the count `value` (>= 0). Throws std::invalid_argument if negative,
  /// std::system_error if the shared memory cannot be made.
  explicit semaphore(std::int64_t value = 1);
  /// Waits until the count is positive and decrements it.
  void acquire() { (void)detail::sync_acquire(*core_, std::nullopt); }
  /// As acquire(), waiting at most `timeout` (saturated as in join(timeout)); false on time-out.
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return detail::sync_acquire(*core_, detail::optional_timeout(timeout));
  }
  /// Increments the count, waking a waiter.
  void release() { detail::sync_release(*core_); }
  /// The count now (others may change it at once).
  std::int64_t get_value() const;
};

/// Python's BoundedSemaphore: an mp::semaphore whose release() beyond its initial value
/// throws mp::state_error.
class MULTIPROC_API bounded_semaphore
    : public detail::sync_handle<detail::sync_kind::bounded_semaphore> {
 public:
  /// A semaphore with the count and bound `value` (>= 0). Throws std::invalid_argument if
  /// negative, std::system_error if the shared memory cannot be made.
  explicit bounded_semaphore(std::int64_t value = 1);
  /// Waits until the count is positive and decrements it.
  void acquire() { (void)detail::sync_acquire(*core_, std::nullopt); }
  /// As acquire(), waiting at most `timeout` (saturated as in join(timeout)); false on time-out.
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return detail::sync_acquire(*core_, detail::optional_timeout(timeout));
  }
  /// Increments the count. Throws mp::state_error if it is at its initial value already.
  void release() { detail::sync_release(*core_); }
  /// The count now (others may change it at once).
  std::int64_t get_value() const;
};

/// Python's multiprocessing.Event: a flag processes wait for. A handle, travelling as
/// mp::mutex does.
class MULTIPROC_API event : public detail::sync_handle<detail::sync_kind::event> {
 public:
  /// A new event, not set. Throws std::system_error if the shared memory cannot be made.
  event();
  /// Sets the flag and wakes every waiter.
  void set();
  /// Clears the flag.
  void clear();
  /// Whether the flag is set now.
  bool is_set() const;
  /// Waits until the flag is set.
  void wait() { (void)detail::sync_acquire(*core_, std::nullopt); }
  /// Waits at most `timeout` (saturated as in join(timeout)); the flag at the end.
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return detail::sync_acquire(*core_, detail::optional_timeout(timeout));
  }
};

/// Python's multiprocessing.Condition: waits for a notification under a lock -- its own
/// mp::recursive_mutex, or the mp::mutex or mp::recursive_mutex it is given. A handle: the
/// lock travels with it. wait() releases the lock (every level of a recursive one), sleeps
/// until notified, and takes it back. notify(n) wakes the n longest waiting; at most 128
/// processes or threads may wait at once (more: std::length_error). Waiting and notifying need
/// the lock held by the caller (else mp::state_error).
class MULTIPROC_API condition : public detail::sync_handle<detail::sync_kind::condition> {
 public:
  /// A condition with its own recursive_mutex. Throws std::system_error.
  condition();
  /// A condition under `lock` (shared with every copy of that handle). Throws
  /// std::system_error.
  explicit condition(const mutex& lock);
  /// A condition under `lock`. Throws std::system_error.
  explicit condition(const recursive_mutex& lock);

  /// Takes the condition's lock (see mp::mutex::acquire()).
  void acquire() { (void)detail::sync_acquire(*lock_, std::nullopt); }
  /// Takes the lock waiting at most `timeout`; false on time-out.
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return detail::sync_acquire(*lock_, detail::optional_timeout(timeout));
  }
  /// Releases the lock.
  void release() { detail::sync_release(*lock_); }
  /// std Lockable: acquire().
  void lock() { acquire(); }
  /// std Lockable: takes the lock if it can now.
  bool try_lock() { return detail::sync_acquire(*lock_, std::chrono::nanoseconds(0)); }
  /// std TimedLockable: acquire(timeout).
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    return acquire(timeout);
  }
  /// std Lockable: release().
  void unlock() { release(); }

  /// With the lock held: releases it, waits for notify()/notify_all(), takes it back. Throws
  /// mp::state_error if the caller does not hold the lock; mp::owner_died_error if a holder
  /// died while this one waited to take it back (the lock is then not held).
  void wait() { (void)wait_for_ns(std::nullopt); }
  /// As wait(), waiting at most `timeout` for the notification; false if none came (the lock
  /// is held again either way).
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_for_ns(detail::optional_timeout(timeout));
  }
  /// Waits until `predicate()` holds, at most `timeout` in all; the predicate's last value.
  /// Called with the lock held.
  template <class Predicate, class Rep, class Period>
  bool wait_for(Predicate predicate, std::chrono::duration<Rep, Period> timeout) {
    const auto limit = detail::optional_timeout(timeout);
    const auto deadline = std::chrono::steady_clock::now() + limit.value_or(std::chrono::hours(1));
    while (!predicate()) {
      if (!limit) {
        wait();
        continue;
      }
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= left.zero()) return predicate();
      (void)wait(left);
    }
    return true;
  }
  /// Wakes the `n` longest waiting (fewer if fewer wait). Throws mp::state_error without the
  /// lock.
  void notify(std::size_t n = 1);
  /// Wakes every waiter. Throws mp::state_error without the lock.
  void notify_all();

  /// cereal: travels with its lock.
  template <class Archive>
  void save(Archive& archive) const {
    archive(detail::sync_export(*core_), detail::sync_export(*lock_),
            static_cast<std::uint32_t>(detail::sync_kind_of(*lock_)));
  }
  /// cereal: the receiving side of save().
  template <class Archive>
  void load(Archive& archive) {
    std::string mine, lock;
    std::uint32_t kind = 0;
    archive(mine, lock, kind);
    core_ = detail::sync_import(detail::sync_kind::condition, mine);
    lock_ = detail::sync_import(kind == static_cast<std::uint32_t>(detail::sync_kind::mutex)
                                    ? detail::sync_kind::mutex
                                    : detail::sync_kind::recursive_mutex,
                                lock);
  }

 private:
  bool wait_for_ns(detail::optional_ns timeout);
  std::shared_ptr<detail::sync_core> lock_;
};

/// Python's multiprocessing.Barrier: `parties` processes (or threads) wait until all have
/// arrived, then all go on. Reusable. A handle, travelling as mp::mutex does. A party that dies
/// while others wait is not noticed: give wait() a timeout where that can happen.
class MULTIPROC_API barrier : public detail::sync_handle<detail::sync_kind::barrier> {
 public:
  /// A barrier for `parties` (>= 1; else std::invalid_argument). Throws nothing else: the
  /// shared memory of every primitive here is made on first use (or when it first travels),
  /// which may throw std::system_error.
  explicit barrier(std::size_t parties = 1);
  /// Waits until `parties` have called wait(); returns this caller's arrival index, 0 for the
  /// first to arrive up to parties() - 1 for the last. Throws mp::broken_barrier_error if the
  /// barrier is or becomes broken (abort(), reset() while waiting, a timed-out wait).
  std::size_t wait() { return wait_for_ns(std::nullopt); }
  /// As wait(), waiting at most `timeout`: when it runs out, the barrier breaks (as in
  /// Python) and this and every waiting party throw mp::broken_barrier_error.
  template <class Rep, class Period>
  std::size_t wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_for_ns(detail::optional_timeout(timeout));
  }
  /// Breaks the barrier: every waiting party and every later wait() throws
  /// mp::broken_barrier_error until reset().
  void abort();
  /// Back to the initial state; parties waiting now throw mp::broken_barrier_error.
  void reset();
  /// The number of parties.
  std::size_t parties() const;
  /// The number of parties waiting now.
  std::size_t n_waiting() const;
  /// Whether the barrier is broken.
  bool broken() const;

 private:
  std::size_t wait_for_ns(detail::optional_ns timeout);
};

}  // namespace multiproc
