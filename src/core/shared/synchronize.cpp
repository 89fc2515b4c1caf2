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
#include "sync_state.hpp"

namespace multiproc::detail {

namespace {
constexpr std::chrono::milliseconds liveness_slice{100};
constexpr std::uint32_t sync_magic = 0x434e5953;  // "SYNC"

constexpr std::size_t slots_at = (sizeof(sync_state) + 63) / 64 * 64;
std::size_t payload_of(sync_kind kind) {
  return kind == sync_kind::condition ? slots_at + condition_slots * sizeof(condition_slot)
                                      : sizeof(sync_state);
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

std::span<condition_slot> slots_of(sync_state& state) {
  return {reinterpret_cast<condition_slot*>(reinterpret_cast<char*>(&state) + slots_at),
          condition_slots};
}

namespace {
/// This thread's number, unique in the process (and kept by a forked child's one thread).
std::uint32_t thread_number() noexcept {
  static std::atomic<std::uint32_t> next{1};
  thread_local const std::uint32_t mine = next.fetch_add(1, std::memory_order_relaxed);
  return mine;
}
}  // namespace

std::uint64_t self_word() noexcept {
  return (static_cast<std::uint64_t>(os::this_process_stamp().pid) << 32) | thread_number();
}

// Starts at 1, so a thread's cache (generation 0) is filled at its first use.
std::atomic<std::uint32_t> sync_fork_generation{1};
namespace {
const bool generation_bumped_in_children = [] {
  os::run_in_forked_children([] { sync_fork_generation.fetch_add(1, std::memory_order_relaxed); });
  return true;
}();
}  // namespace

void sync_refresh_self(sync_self& self) noexcept {
  (void)generation_bumped_in_children;
  self.generation = sync_fork_generation.load(std::memory_order_relaxed);
  self.word = self_word();
  self.started = os::this_process_stamp().started;
}

std::optional<sync_clock::time_point> deadline_of(optional_ns timeout) {
  if (!timeout) return std::nullopt;
  return sync_clock::now() + *timeout;
}
bool expired(std::optional<sync_clock::time_point> deadline) {
  return deadline && sync_clock::now() >= *deadline;
}
optional_ns next_wait(std::optional<sync_clock::time_point> deadline) {
  if (!deadline) return liveness_slice;
  return std::min<std::chrono::nanoseconds>(liveness_slice, *deadline - sync_clock::now());
}

sync_core::sync_core(shared_object object) : object_(std::move(object)) {
  auto* s = reinterpret_cast<sync_state*>(object_->payload());
  kind_ = s->kind;
  publish(s);
}

sync_state& sync_core::create() {
  std::call_once(created_, [&] {
    object_ = shared_object::create(shared_object::kind::sync, payload_of(kind_), false);
    auto* s = new (object_->payload()) sync_state{};
    s->magic = sync_magic;
    s->kind = kind_;
    s->count.store(value_);
    s->maximum = value_;
    publish(s);
  });
  return *state_.load(std::memory_order_acquire);
}

void sync_core::publish(sync_state* state) noexcept {
  state_.store(state, std::memory_order_release);
  hot_.words.store(state, std::memory_order_release);
}

// ---- the waiting machinery ----------------------------------------------------------------

void wake_waiters(sync_core& core) {
  if (core.state().waiters.load() == 0) return;
  shared_lock lock(core.object());
  core.object().sync().wake_all();
}

namespace {

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
    const auto before = sync_clock::now();
    lock.wait(next_wait(deadline));
    if (owned && sync_clock::now() - before >= liveness_slice) {
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

sync_hot& sync_hot_of(sync_core& core) {
  return core.hot();
}

void sync_release_unheld(sync_core& core) {
  throw state_error(std::string("mp::") + name_of(core.kind()) + "::release: the lock is not held");
}

void sync_wake(sync_core& core) {
  wake_waiters(core);
}

sync_kind sync_kind_of(sync_core& core) {
  return core.kind();
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

}  // namespace multiproc
