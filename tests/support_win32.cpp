// Resource counting on Windows: handles, live children (no zombies or /dev/shm there).
#include <windows.h>

#include <psapi.h>
#include <tlhelp32.h>

#include <cstdlib>
#include <string>

#include "support.hpp"

namespace multiproc_test {

resource_counts count_resources() {
  resource_counts counts;
  DWORD handles = 0;
  if (GetProcessHandleCount(GetCurrentProcess(), &handles)) {
    counts.descriptors = static_cast<int>(handles);
  }
  const DWORD self = GetCurrentProcessId();
  HANDLE threads = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
  if (threads != INVALID_HANDLE_VALUE) {
    THREADENTRY32 entry{};
    entry.dwSize = sizeof entry;
    for (BOOL more = Thread32First(threads, &entry); more; more = Thread32Next(threads, &entry)) {
      if (entry.th32OwnerProcessID == self) ++counts.threads;
    }
    CloseHandle(threads);
  }
  HANDLE snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
  if (snapshot != INVALID_HANDLE_VALUE) {
    PROCESSENTRY32W entry{};
    entry.dwSize = sizeof entry;
    for (BOOL more = Process32FirstW(snapshot, &entry); more;
         more = Process32NextW(snapshot, &entry)) {
      if (entry.th32ParentProcessID == self && entry.th32ProcessID != self) ++counts.children;
    }
    CloseHandle(snapshot);
  }
  return counts;
}

std::size_t resident_bytes() {
  PROCESS_MEMORY_COUNTERS counters{};
  counters.cb = sizeof counters;
  if (!K32GetProcessMemoryInfo(GetCurrentProcess(), &counters, sizeof counters)) return 0;
  return counters.WorkingSetSize;
}

bool process_running(long pid) {
  HANDLE process = OpenProcess(SYNCHRONIZE, FALSE, static_cast<DWORD>(pid));
  if (process == nullptr) return false;
  const bool running = WaitForSingleObject(process, 0) == WAIT_TIMEOUT;
  CloseHandle(process);
  return running;
}

void kill_from_outside(long pid) {
  HANDLE process = OpenProcess(PROCESS_TERMINATE, FALSE, static_cast<DWORD>(pid));
  if (process == nullptr) return;
  TerminateProcess(process, 9);
  CloseHandle(process);
}

// abort() ends a program with exit code 3 on Windows.
int abort_exit_code() {
  return 3;
}
int sigterm_exit_code() {
  return -15;
}
int sigkill_exit_code() {
  return -9;
}

std::string temporary_path(const std::string& stem) {
  wchar_t buffer[MAX_PATH + 1];
  const DWORD n = GetTempPathW(MAX_PATH + 1, buffer);
  std::string base;
  for (DWORD i = 0; i < n; ++i)
    base.push_back(static_cast<char>(buffer[i]));  // ASCII temp dirs
  static int counter = 0;
  return base + "multiproc-test-" + std::to_string(GetCurrentProcessId()) + "-" +
         std::to_string(++counter) + "-" + stem;
}

}  // namespace multiproc_test

namespace multiproc_test {
// Windows has no signals: TerminateProcess(h, 9) from outside reads back as exit code 9.
int outside_kill_exit_code() {
  return 9;
}
}  // namespace multiproc_test
