// This process on Windows: ids, processor count, environment, randomness.
#include "../os/system.hpp"
#include "internal.hpp"

#include <bcrypt.h>
#include <stdlib.h>  // _wputenv_s

#include <algorithm>
#include <string>
#include <system_error>
#include <thread>

#include <multiproc/errors.hpp>

#if defined(_MSC_VER)
#pragma comment(lib, "bcrypt.lib")
#endif

namespace multiproc::detail::os {

namespace {

// The layout of PROCESS_BASIC_INFORMATION, declared here because winternl.h differs between
// SDKs (MinGW and MSVC name the fields differently).
struct basic_information {
  LONG exit_status;
  void* peb;
  ULONG_PTR affinity_mask;
  LONG base_priority;
  ULONG_PTR unique_process_id;
  ULONG_PTR parent_process_id;
};
using query_information_process = LONG(WINAPI*)(HANDLE, int, void*, ULONG, ULONG*);

long query_parent_pid() noexcept {
  // The pid Windows recorded at creation. Unlike getppid() it does not change when the parent
  // ends, and the pid may have been reused by then: callers compare, they do not signal it.
  const HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
  if (ntdll == nullptr) return 0;
  const auto query = reinterpret_cast<query_information_process>(
      reinterpret_cast<void*>(GetProcAddress(ntdll, "NtQueryInformationProcess")));
  if (query == nullptr) return 0;
  basic_information info{};
  ULONG length = 0;
  if (query(GetCurrentProcess(), 0 /* ProcessBasicInformation */, &info, sizeof info, &length) <
      0) {
    return 0;
  }
  return static_cast<long>(info.parent_process_id);
}

}  // namespace

long current_pid() noexcept {
  return static_cast<long>(GetCurrentProcessId());
}

long parent_pid() noexcept {
  static const long pid = query_parent_pid();
  return pid;
}

unsigned hardware_cpu_count() noexcept {
  // The CPUs this process may run on, as os.process_cpu_count(): its affinity mask (set by
  // start /affinity or a job). With several processor groups (over 64 CPUs) a mask describes one
  // group only, and a process may run on all of them: every active CPU counts then.
  DWORD_PTR process_mask = 0, system_mask = 0;
  if (GetActiveProcessorGroupCount() <= 1 &&
      GetProcessAffinityMask(GetCurrentProcess(), &process_mask, &system_mask) &&
      process_mask != 0) {
    unsigned count = 0;
    for (; process_mask != 0; process_mask &= process_mask - 1)
      ++count;
    return count;
  }
  const DWORD count = GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
  if (count != 0) return count;
  return std::max(1U, std::thread::hardware_concurrency());
}

void unset_environment(const char* name) noexcept {
  // The C runtime keeps its own copy of the environment (getenv reads it) next to the one in
  // the process block (GetEnvironmentVariableW and CreateProcess read that): drop both.
  try {
    std::wstring wide;
    if (!utf8_to_utf16(name, wide) || wide.empty()) return;
    _wputenv_s(wide.c_str(), L"");  // an empty value removes the variable from both views
    _putenv_s(name, "");            // the narrow copy, if the runtime made one
    SetEnvironmentVariableW(wide.c_str(), nullptr);
  } catch (...) {
    // Out of memory converting a short name: nothing sensible to do in a noexcept function.
  }
}

void random_bytes(void* buffer, std::size_t size) {
  auto* next = static_cast<unsigned char*>(buffer);
  while (size != 0) {
    const auto chunk = static_cast<ULONG>(std::min<std::size_t>(size, 1U << 30));
    const NTSTATUS status = BCryptGenRandom(nullptr, next, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG);
    if (status < 0) {
      throw start_error("cannot read random bytes (BCryptGenRandom)",
                        std::error_code(static_cast<int>(status), std::system_category()));
    }
    next += chunk;
    size -= chunk;
  }
}

unsigned thread_count() noexcept {
  return 0;  // not needed: the automatic start method is spawn on Windows, whatever the threads
}

void prepare_fresh_memory(void*, std::size_t) noexcept {
  // Large pages on Windows need SeLockMemoryPrivilege, which programs seldom hold.
}

void ignore_interrupts() noexcept {
  SetConsoleCtrlHandler(nullptr, TRUE);  // ignores Ctrl+C; inherited by its children
}

bool stderr_is_terminal() noexcept {
  // A console handle has a console mode; a pipe, a file or NUL has none (_isatty is true for
  // NUL too, so it is not asked).
  DWORD mode = 0;
  const HANDLE err = GetStdHandle(STD_ERROR_HANDLE);
  return err != nullptr && err != INVALID_HANDLE_VALUE && GetConsoleMode(err, &mode) != 0;
}

int stderr_terminal_columns() noexcept {
  CONSOLE_SCREEN_BUFFER_INFO info{};
  if (!GetConsoleScreenBufferInfo(GetStdHandle(STD_ERROR_HANDLE), &info)) return 0;
  return info.srWindow.Right - info.srWindow.Left + 1;
}

}  // namespace multiproc::detail::os
