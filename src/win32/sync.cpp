// Synchronisation between processes on Windows (see src/os/sync.hpp): an unnamed mutex, which
// reports WAIT_ABANDONED to the next holder when its owner died, and a semaphore to sleep on.
// Both travel as handles (duplicated into each process that receives the object); nothing is
// named, so nothing outlives the processes holding them.
#include <algorithm>
#include <atomic>
#include <climits>
#include <new>
#include <system_error>

#include "../os/child.hpp"
#include "../os/sync.hpp"
#include "internal.hpp"

namespace multiproc::detail::os {

namespace {

struct state {
  /// Processes in wait() since the last wake_all(), counted under the mutex.
  std::atomic<std::uint32_t> sleepers;
  /// Bumped by every wake_all(): a sleeper that timed out sees whether it was counted out.
  std::atomic<std::uint32_t> generation;
};
static_assert(sizeof(state) <= shared_sync::memory_size);

state& state_at(void* memory) {
  return *static_cast<state*>(memory);
}

/// WaitForSingleObject with a timeout of any length (nullopt: INFINITE), rounded up so it never
/// returns before the timeout.
DWORD wait_for(HANDLE object, std::optional<std::chrono::nanoseconds> timeout) {
  using namespace std::chrono;
  if (!timeout) return WaitForSingleObject(object, INFINITE);
  const auto deadline = steady_clock::now() + std::max(*timeout, nanoseconds::zero());
  for (;;) {
    const auto left = deadline - steady_clock::now();
    const long long ms = ceil<milliseconds>(std::max(left, steady_clock::duration::zero())).count();
    const DWORD result =
        WaitForSingleObject(object, static_cast<DWORD>(std::min<long long>(ms, INFINITE - 1)));
    if (result != WAIT_TIMEOUT || steady_clock::now() >= deadline) return result;
  }
}

shared_sync::outcome interpret(DWORD result) {
  switch (result) {
    case WAIT_OBJECT_0:
      return shared_sync::outcome::acquired;
    case WAIT_ABANDONED:
      return shared_sync::outcome::acquired_owner_died;
    case WAIT_TIMEOUT:
      return shared_sync::outcome::timed_out;
    default:
      throw std::system_error(last_error_code(), "WaitForSingleObject (shared lock)");
  }
}

std::uint64_t creation_time(HANDLE process) noexcept {
  FILETIME created{}, exited{}, kernel{}, user{};
  if (!GetProcessTimes(process, &created, &exited, &kernel, &user)) return 0;
  return (std::uint64_t{created.dwHighDateTime} << 32) | created.dwLowDateTime;
}

}  // namespace

process_stamp this_process_stamp() noexcept {
  // Computed once: no fork here, and the locks read it on every acquire.
  static const process_stamp self{static_cast<std::int64_t>(GetCurrentProcessId()),
                                  creation_time(GetCurrentProcess())};
  return self;
}

void run_in_forked_children(void (*)()) noexcept {}  // no fork on Windows

process_stamp stamp_of(const child& started) noexcept {
  return {started.pid(), creation_time(as_handle(started.handle()))};
}

bool still_running(const process_stamp& stamp) noexcept {
  const HANDLE process = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE, FALSE,
                                     static_cast<DWORD>(stamp.pid));
  if (process == nullptr) return GetLastError() != ERROR_INVALID_PARAMETER;  // no such process
  const bool ended = WaitForSingleObject(process, 0) == WAIT_OBJECT_0;
  const std::uint64_t created = creation_time(process);
  CloseHandle(process);
  return !ended && (created == 0 || stamp.started == 0 || created == stamp.started);
}

holder_count make_holder_count() {
  HANDLE watch = nullptr;
  HANDLE hold = nullptr;
  if (!CreatePipe(&watch, &hold, nullptr, 0))
    throw std::system_error(last_error_code(), "CreatePipe");
  return {owned_handle(as_native(watch), handle_kind::travelling),
          owned_handle(as_native(hold), handle_kind::travelling)};
}

bool holders_gone(native_handle watch) noexcept {
  // Nothing is ever written: the read end reports a broken pipe once no write end is left.
  DWORD available = 0;
  if (PeekNamedPipe(as_handle(watch), nullptr, 0, nullptr, &available, nullptr)) return false;
  return GetLastError() == ERROR_BROKEN_PIPE;
}

shared_sync shared_sync::create(void* memory) {
  new (memory) state{};
  shared_sync made;
  made.memory_ = memory;
  const HANDLE mutex = CreateMutexW(nullptr, FALSE, nullptr);
  if (mutex == nullptr) throw std::system_error(last_error_code(), "CreateMutexW");
  made.handles_.emplace_back(as_native(mutex), handle_kind::travelling);
  const HANDLE semaphore = CreateSemaphoreW(nullptr, 0, LONG_MAX, nullptr);
  if (semaphore == nullptr) throw std::system_error(last_error_code(), "CreateSemaphoreW");
  made.handles_.emplace_back(as_native(semaphore), handle_kind::travelling);
  return made;
}

shared_sync shared_sync::adopt(void* memory, std::vector<owned_handle> handles) {
  shared_sync adopted;
  adopted.memory_ = memory;
  adopted.handles_ = std::move(handles);
  return adopted;
}

shared_sync::outcome shared_sync::lock(std::optional<std::chrono::nanoseconds> timeout) {
  return interpret(wait_for(as_handle(handles_.at(0).get()), timeout));
}

void shared_sync::unlock() noexcept {
  ReleaseMutex(as_handle(handles_[0].get()));
}

shared_sync::outcome shared_sync::wait(std::optional<std::chrono::nanoseconds> timeout) {
  auto& s = state_at(memory_);
  const std::uint32_t generation = s.generation.load();
  s.sleepers.fetch_add(1);
  ReleaseMutex(as_handle(handles_[0].get()));
  const DWORD slept = wait_for(as_handle(handles_[1].get()), timeout);
  const outcome relocked = interpret(wait_for(as_handle(handles_[0].get()), std::nullopt));
  // Timed out with no wake_all() since: still counted as a sleeper, so count itself out. (Had
  // one come, it counted this sleeper out and left a token: a later wait returns early once,
  // which callers take as the spurious wake-up they allow for.)
  if (slept != WAIT_OBJECT_0 && s.generation.load() == generation && s.sleepers.load() != 0) {
    s.sleepers.fetch_sub(1);
  }
  return relocked;
}

void shared_sync::wake_all() noexcept {
  auto& s = state_at(memory_);
  s.generation.fetch_add(1);
  const std::uint32_t sleeping = s.sleepers.exchange(0);
  if (sleeping != 0) {
    ReleaseSemaphore(as_handle(handles_[1].get()),
                     static_cast<LONG>(std::min<std::uint32_t>(sleeping, LONG_MAX)), nullptr);
  }
}

}  // namespace multiproc::detail::os
