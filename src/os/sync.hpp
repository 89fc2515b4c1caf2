// The backend seam, part 9: synchronisation between processes, under every shared object
// (queues, pipes, locks, events, barriers...). Twins: src/posix/sync.cpp (with sync_linux.cpp)
// and src/win32/sync.cpp.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "handle.hpp"

namespace multiproc::detail::os {

/// Names a process for as long as it runs, pid reuse included: its id and its start time.
struct process_stamp {
  std::int64_t pid = 0;
  std::uint64_t started = 0;
  bool operator==(const process_stamp&) const = default;
};
/// The calling process's stamp.
process_stamp this_process_stamp() noexcept;
/// Has `callback` run in every child forked from this process from now on, in the child's one
/// thread, before fork() returns there (POSIX: pthread_atfork; Windows: never, no fork).
void run_in_forked_children(void (*callback)()) noexcept;
class child;
/// The stamp of a child this process started.
process_stamp stamp_of(const child& started) noexcept;
/// False once the process `stamp` names has ended (or its pid belongs to another process); a
/// child of this process counts as ended as soon as it ends, before it is reaped (POSIX:
/// waitid with WNOWAIT). A process this one may not inspect counts as running.
bool still_running(const process_stamp& stamp) noexcept;

/// Tells the CPU this thread is spinning (x86: pause; arm64: yield; elsewhere nothing).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// Holders of something, counted by the kernel: every holder keeps a copy of `hold`; whoever
/// keeps `watch` can tell when no copy of `hold` is left in any process, however the holders
/// ended (a pipe: `hold` is its write end, `watch` its read end). Both are travelling handles.
struct holder_count {
  owned_handle watch;
  owned_handle hold;
};
/// Throws std::system_error.
holder_count make_holder_count();
/// True once every copy of the `hold` handle matching `watch` is closed, in every process.
/// Never blocks.
bool holders_gone(native_handle watch) noexcept;

/// A lock and a wake-up in memory processes share: the lock tells the next holder when the last
/// one died holding it; wait() sleeps until wake_all() (or a timeout, or spuriously: callers
/// loop on their condition). Its state lives in `memory_size` bytes of shared memory; on
/// Windows it also has kernel objects, which travel as handles().
///   Linux: a robust, process-shared pthread mutex and a futex word.
///   Windows: an unnamed mutex (WAIT_ABANDONED when its owner died) and a semaphore.
class shared_sync {
 public:
  static constexpr std::size_t memory_size = 128;

  /// Sets the state up in `memory` (zeroed, memory_size bytes, shared) and makes its kernel
  /// objects. Throws std::system_error.
  static shared_sync create(void* memory);
  /// The same object in a process that mapped its memory and received its handles().
  static shared_sync adopt(void* memory, std::vector<owned_handle> handles);

  shared_sync() = default;
  shared_sync(shared_sync&&) noexcept = default;
  shared_sync& operator=(shared_sync&&) noexcept = default;

  /// What must travel with the memory (Windows: the mutex and the semaphore; POSIX: none).
  const std::vector<owned_handle>& handles() const noexcept { return handles_; }

  enum class outcome {
    acquired,             ///< the lock is held now
    acquired_owner_died,  ///< held now; its last holder died holding it (state may be half-done)
    timed_out,            ///< not held
  };
  /// Takes the lock, waiting at most `timeout` (nullopt: no limit). Throws std::system_error.
  outcome lock(std::optional<std::chrono::nanoseconds> timeout);
  /// Releases the lock (held by this thread).
  void unlock() noexcept;
  /// With the lock held: releases it, sleeps until wake_all() or `timeout` (or spuriously), and
  /// takes it again (the outcome of that). Throws std::system_error.
  outcome wait(std::optional<std::chrono::nanoseconds> timeout);
  /// With the lock held: wakes every process waiting in wait(). Linux: the wake-up is made
  /// when the lock is released, so that the woken find it free.
  void wake_all() noexcept;

  /// How long this process spins before it sleeps (Linux; adapts as spins pay off or not).
  struct spin_budget {
    std::atomic<std::int32_t> nanoseconds{20000};
    std::atomic<std::uint32_t> skipped{0};
  };

 private:
  void* memory_ = nullptr;
  std::vector<owned_handle> handles_;
  std::unique_ptr<spin_budget> spin_;
};

}  // namespace multiproc::detail::os
