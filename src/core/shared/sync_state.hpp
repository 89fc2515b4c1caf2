// The state of every synchronisation primitive, shared by src/core/shared/synchronize.cpp
// (mutexes, semaphores, events, the waiting machinery) and condition_barrier.cpp: its layout in
// shared memory, and sync_core, the primitive's object in one process.
#pragma once

#include <multiproc/synchronize.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>

#include "shared_object.hpp"

namespace multiproc::detail {

using sync_clock = std::chrono::steady_clock;
constexpr std::size_t condition_slots = 128;

/// One waiter of a condition.
struct condition_slot {
  std::uint64_t ticket;  // 0: free
  std::uint64_t notified;
  std::int64_t pid;
  std::uint64_t started;
};

/// A primitive's state in shared memory; its hot words first (the public header reads them).
struct sync_state : sync_hot_words {
  /// Recursive mutex: levels beyond the first (only its holder touches it).
  std::uint64_t depth;
  /// Semaphores: the count; event: the flag.
  std::atomic<std::int64_t> count;
  /// Bounded semaphore: the bound. Barrier: the parties.
  std::int64_t maximum;
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

/// A condition's waiter slots, after its state.
std::span<condition_slot> slots_of(sync_state& state);
/// The calling thread's owner word: (pid << 32 | thread number).
std::uint64_t self_word() noexcept;

std::optional<sync_clock::time_point> deadline_of(optional_ns timeout);
bool expired(std::optional<sync_clock::time_point> deadline);
/// How long to sleep next: a liveness slice at most, and never past the deadline.
optional_ns next_wait(std::optional<sync_clock::time_point> deadline);

/// A primitive in this process. Its shared memory is made on first use (or when it first
/// travels), so a handle default-made only to be decoded into costs nothing.
class sync_core {
 public:
  sync_core(sync_kind kind, std::int64_t value) : kind_(kind), value_(value) {}
  explicit sync_core(shared_object object);
  sync_state& state() {
    sync_state* s = state_.load(std::memory_order_acquire);
    return s != nullptr ? *s : create();
  }
  shared_object& object() {
    (void)state();
    return *object_;
  }
  sync_kind kind() const noexcept { return kind_; }
  /// The hot words' address for the public header's inline paths, once the state exists.
  sync_hot& hot() noexcept { return hot_; }

 private:
  sync_state& create();
  void publish(sync_state* state) noexcept;

  sync_kind kind_;
  std::int64_t value_ = 0;
  std::once_flag created_;
  std::optional<shared_object> object_;
  std::atomic<sync_state*> state_{nullptr};
  sync_hot hot_;
};

/// After a slot of the hot word was freed: wakes sleepers, if any were counted in.
void wake_waiters(sync_core& core);

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

}  // namespace multiproc::detail
