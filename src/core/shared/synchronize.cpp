// mp::mutex, mp::recursive_mutex, mp::semaphore, mp::bounded_semaphore, mp::event,
// mp::condition and mp::barrier, the library side. Each is one shared object: a small state in
// unnamed shared memory and the one os::shared_sync under it (CPython builds every primitive on
// one semaphore; here it is one lock + wake-up). The hot words (a mutex's owner, a semaphore's
// count, an event's flag) are atomics taken without the shared lock when uncontended; a waiter
// takes the shared lock, counts itself in `waiters` and sleeps in shared_sync::wait(); whoever
// frees the word then looks at `waiters` (both sides sequentially consistent, so one of them
// sees the other) and wakes under the shared lock.
//
// A mutex's owner word is (pid << 32 | thread number). A waiter that sleeps a whole liveness
// slice looks whether the owner's process still runs; if not, it frees the word and throws
// owner_died_error.
#include <multiproc/synchronize.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <limits>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <thread>

#include "../../os/sync.hpp"
#include "../protocol/frame.hpp"
#include "shared_object.hpp"

namespace multiproc::detail {

namespace {

using clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds liveness_slice{100};
constexpr std::uint32_t sync_magic = 0x434e5953;  // "SYNC"
constexpr std::size_t condition_slots = 128;

struct condition_slot {
  std::uint64_t ticket;  // 0: free
  std::uint64_t notified;
  std::int64_t pid;
  std::uint64_t started;
};

struct sync_state {
  std::uint32_t magic;
  sync_kind kind;
  /// Mutexes: (pid << 32 | thread number) of the holder, 0 when free.
  std::atomic<std::uint64_t> owner;
  /// Equal to owner once owner_started is the holder's (written just after the word).
  std::atomic<std::uint64_t> stamped;
  std::atomic<std::uint64_t> owner_started;
  /// Recursive mutex: levels beyond the first (only its holder touches it).
  std::uint64_t depth;
  /// Semaphores: the count; event: the flag.
  std::atomic<std::int64_t> count;
  /// Bounded semaphore: the bound. Barrier: the parties.
  std::int64_t maximum;
  /// Processes and threads counted in before they sleep (see the file comment).
  std::atomic<std::uint32_t> waiters;
  // Barrier, under the shared lock.
  std::uint64_t arrived;
  std::uint64_t generation;
  std::uint64_t reset_rounds;  // bit (generation % 64): that round ended by reset()
  std::uint32_t broken;
  // Condition, under the shared lock; its slots follow the state (condition_slots()).
  std::uint64_t next_ticket;
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::int64_t>::is_always_lock_free);

constexpr std::size_t slots_at = (sizeof(sync_state) + 63) / 64 * 64;
std::size_t payload_of(sync_kind kind) {
  return kind == sync_kind::condition ? slots_at + condition_slots * sizeof(condition_slot)
                                      : sizeof(sync_state);
}
/// A condition's waiter slots, after its state.
std::span<condition_slot> slots_of(sync_state& state) {
  return {reinterpret_cast<condition_slot*>(reinterpret_cast<char*>(&state) + slots_at),
          condition_slots};
}

/// This thread's number, unique in the process (and kept by a forked child's one thread).
std::uint32_t thread_number() noexcept {
  static std::atomic<std::uint32_t> next{1};
  thread_local const std::uint32_t mine = next.fetch_add(1, std::memory_order_relaxed);
  return mine;
}

std::uint64_t self_word() noexcept {
  return (static_cast<std::uint64_t>(os::this_process_stamp().pid) << 32) | thread_number();
}

std::optional<clock::time_point> deadline_of(optional_ns timeout) {
  if (!timeout) return std::nullopt;
  return clock::now() + *timeout;
}
bool expired(std::optional<clock::time_point> deadline) {
  return deadline && clock::now() >= *deadline;
}
optional_ns next_wait(std::optional<clock::time_point> deadline) {
  if (!deadline) return liveness_slice;
  return std::min<std::chrono::nanoseconds>(liveness_slice, *deadline - clock::now());
}

const char* name_of(sync_kind kind) {
  switch (kind) {
    case sync_kind::mutex:
      return "mutex";
    case sync_kind::recursive_mutex:
      return "recursive_mutex";
    case sync_kind::semaphore:
      return "semaphore";
    case sync_kind::bounded_semaphore:
      return "bounded_semaphore";
    case sync_kind::event:
      return "event";
    case sync_kind::condition:
      return "condition";
    case sync_kind::barrier:
      return "barrier";
  }
  return "?";
}

}  // namespace

/// A primitive in this process. Its shared memory is made on first use (or when it first
/// travels), so a handle default-made only to be decoded into costs nothing.
class sync_core {
 public:
  sync_core(sync_kind kind, std::int64_t value) : kind_(kind), value_(value) {}
  explicit sync_core(shared_object object) : object_(std::move(object)) {
    auto* s = reinterpret_cast<sync_state*>(object_->payload());
    kind_ = s->kind;
    state_.store(s, std::memory_order_release);
  }
  sync_state& state() {
    sync_state* s = state_.load(std::memory_order_acquire);
    return s != nullptr ? *s : create();
  }
  shared_object& object() {
    (void)state();
    return *object_;
  }
  sync_kind kind() const noexcept { return kind_; }

 private:
  sync_state& create() {
    std::call_once(created_, [&] {
      object_ = shared_object::create(shared_object::kind::sync, payload_of(kind_), false);
      auto* s = new (object_->payload()) sync_state{};
      s->magic = sync_magic;
      s->kind = kind_;
      s->count.store(value_);
      s->maximum = value_;
      state_.store(s, std::memory_order_release);
    });
    return *state_.load(std::memory_order_acquire);
  }

  sync_kind kind_;
  std::int64_t value_ = 0;
  std::once_flag created_;
  std::optional<shared_object> object_;
  std::atomic<sync_state*> state_{nullptr};
};

namespace {

// ---- the waiting machinery ----------------------------------------------------------------

/// After a slot of the hot word was freed: wakes sleepers, if any were counted in.
void wake_waiters(sync_core& core) {
  if (core.state().waiters.load() == 0) return;
  shared_lock lock(core.object());
  core.object().sync().wake_all();
}

/// Counts the caller among the waiters while it lives (with the shared lock held).
class counted_waiter {
 public:
  explicit counted_waiter(sync_state& state) : state_(state) { state_.waiters.fetch_add(1); }
  ~counted_waiter() { state_.waiters.fetch_sub(1); }
  counted_waiter(const counted_waiter&) = delete;
  counted_waiter& operator=(const counted_waiter&) = delete;

 private:
  sync_state& state_;
};

/// Under the shared lock: if the mutex's holder has ended, frees it, wakes the others and
/// throws owner_died_error.
void check_owner_alive(sync_core& core) {
  auto& s = core.state();
  std::uint64_t owner = s.owner.load();
  if (owner == 0) return;
  const std::uint64_t started = s.stamped.load() == owner ? s.owner_started.load() : 0;
  const os::process_stamp stamp{static_cast<std::int64_t>(owner >> 32), started};
  if (os::still_running(stamp)) return;
  if (!s.owner.compare_exchange_strong(owner, 0)) return;
  s.depth = 0;
  core.object().sync().wake_all();
  throw owner_died_error(std::string("mp::") + name_of(s.kind) + ": process " +
                         std::to_string(stamp.pid) +
                         " ended while holding the lock (it is free again; what it guarded "
                         "may be half-done)");
}

/// Sleeps (shared lock held) until `ready()` -- tried under the lock -- or the deadline; true
/// if ready. With `owned`, a full slice asleep makes it look whether the owner died.
template <class Ready>
bool wait_until(sync_core& core, optional_ns timeout, bool owned, Ready ready) {
  const auto deadline = deadline_of(timeout);
  shared_lock lock(core.object());
  counted_waiter counted(core.state());
  for (;;) {
    if (ready()) return true;
    if (expired(deadline)) return false;
    const auto before = clock::now();
    lock.wait(next_wait(deadline));
    if (owned && clock::now() - before >= liveness_slice) {
      if (ready()) return true;
      check_owner_alive(core);
    }
  }
}

// ---- mutexes ------------------------------------------------------------------------------

bool try_take(sync_state& s, std::uint64_t me) noexcept {
  std::uint64_t expected = 0;
  if (!s.owner.compare_exchange_strong(expected, me)) return false;
  s.depth = 0;
  s.owner_started.store(os::this_process_stamp().started, std::memory_order_relaxed);
  s.stamped.store(me, std::memory_order_release);
  return true;
}

bool mutex_acquire(sync_core& core, optional_ns timeout) {
  auto& s = core.state();
  const std::uint64_t me = self_word();
  if (s.kind == sync_kind::recursive_mutex && s.owner.load(std::memory_order_relaxed) == me) {
    ++s.depth;
    return true;
  }
  if (try_take(s, me)) return true;
  if (timeout && *timeout <= std::chrono::nanoseconds::zero()) return false;
  return wait_until(core, timeout, true, [&] { return try_take(s, me); });
}

void mutex_release(sync_core& core) {
  auto& s = core.state();
  if (s.kind == sync_kind::recursive_mutex) {
    if (s.owner.load(std::memory_order_relaxed) != self_word()) {
      throw state_error("mp::recursive_mutex::release: not held by this thread");
    }
    if (s.depth > 0) {
      --s.depth;
      return;
    }
  }
  if (s.owner.exchange(0) == 0) throw state_error("mp::mutex::release: the lock is not held");
  wake_waiters(core);
}

// ---- semaphores and events ----------------------------------------------------------------

bool try_decrement(sync_state& s) noexcept {
  std::int64_t count = s.count.load();
  while (count > 0) {
    if (s.count.compare_exchange_weak(count, count - 1)) return true;
  }
  return false;
}

bool semaphore_acquire(sync_core& core, optional_ns timeout) {
  auto& s = core.state();
  if (try_decrement(s)) return true;
  if (timeout && *timeout <= std::chrono::nanoseconds::zero()) return false;
  return wait_until(core, timeout, false, [&] { return try_decrement(s); });
}

void semaphore_release(sync_core& core) {
  auto& s = core.state();
  if (s.kind == sync_kind::bounded_semaphore) {
    std::int64_t count = s.count.load();
    do {
      if (count >= s.maximum) {
        throw state_error("mp::bounded_semaphore::release: released more times than acquired");
      }
    } while (!s.count.compare_exchange_weak(count, count + 1));
  } else {
    s.count.fetch_add(1);
  }
  wake_waiters(core);
}

bool event_wait(sync_core& core, optional_ns timeout) {
  auto& s = core.state();
  if (s.count.load() != 0) return true;
  if (timeout && *timeout <= std::chrono::nanoseconds::zero()) return false;
  return wait_until(core, timeout, false, [&] { return s.count.load() != 0; });
}

}  // namespace

// ---- the seam the public header calls -----------------------------------------------------

std::shared_ptr<sync_core> sync_make(sync_kind kind, std::int64_t value) {
  return std::make_shared<sync_core>(kind, value);
}

std::string sync_export(sync_core& core) {
  return core.object().export_for_travel();
}

std::shared_ptr<sync_core> sync_import(sync_kind kind, const std::string& exported) {
  auto core =
      std::make_shared<sync_core>(shared_object::import(shared_object::kind::sync, exported));
  const auto& s = core->state();
  if (core->object().payload_size() < payload_of(kind) || s.magic != sync_magic || s.kind != kind) {
    throw serialization_error(serialization_error::phase::decode_arguments,
                              std::string("the shared object is not an mp::") + name_of(kind));
  }
  return core;
}

bool sync_acquire(sync_core& core, optional_ns timeout) {
  switch (core.state().kind) {
    case sync_kind::mutex:
    case sync_kind::recursive_mutex:
      return mutex_acquire(core, timeout);
    case sync_kind::semaphore:
    case sync_kind::bounded_semaphore:
      return semaphore_acquire(core, timeout);
    case sync_kind::event:
      return event_wait(core, timeout);
    default:
      throw std::logic_error("multiproc: sync_acquire of a primitive without acquire()");
  }
}

void sync_release(sync_core& core) {
  switch (core.state().kind) {
    case sync_kind::mutex:
    case sync_kind::recursive_mutex:
      return mutex_release(core);
    case sync_kind::semaphore:
    case sync_kind::bounded_semaphore:
      return semaphore_release(core);
    default:
      throw std::logic_error("multiproc: sync_release of a primitive without release()");
  }
}

}  // namespace multiproc::detail

namespace multiproc {

using detail::sync_kind;

mutex::mutex() : sync_handle(0) {}
recursive_mutex::recursive_mutex() : sync_handle(0) {}

namespace {
std::int64_t non_negative(std::int64_t value, const char* what) {
  if (value < 0) throw std::invalid_argument(std::string(what) + ": a negative count");
  return value;
}
}  // namespace

semaphore::semaphore(std::int64_t value) : sync_handle(non_negative(value, "mp::semaphore")) {}
std::int64_t semaphore::get_value() const {
  return core_->state().count.load();
}
bounded_semaphore::bounded_semaphore(std::int64_t value)
    : sync_handle(non_negative(value, "mp::bounded_semaphore")) {}
std::int64_t bounded_semaphore::get_value() const {
  return core_->state().count.load();
}

event::event() : sync_handle(0) {}
void event::set() {
  core_->state().count.store(1);
  detail::wake_waiters(*core_);
}
void event::clear() {
  core_->state().count.store(0);
}
bool event::is_set() const {
  return core_->state().count.load() != 0;
}

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

sync_kind detail::sync_kind_of(sync_core& core) {
  return core.kind();
}

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
