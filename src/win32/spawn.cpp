// Spawn on Windows: CreateProcessW of the program's own image with only the child's two pipe
// handles inherited; pool workers in a kill-on-close job object.
#include "../os/spawn.hpp"
#include "internal.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cwchar>
#include <string>
#include <system_error>
#include <vector>

#include <multiproc/errors.hpp>

namespace multiproc::detail::os {

namespace {

std::wstring widen(std::string_view text) {
  std::wstring wide;
  if (!utf8_to_utf16(text, wide)) throw start_error("text is not valid UTF-8", last_error_code());
  return wide;
}

std::mutex executable_mutex;
std::wstring executable_override;  // guarded by executable_mutex; empty: this program's image

// Set in a spawned pool worker: its process-kind children break away from the worker job, so
// they outlive the pool the way an mp::process started anywhere else does.
std::atomic<bool> running_in_worker_job{false};

std::wstring own_module_path() {
  // GetModuleFileNameW truncates silently; a result that fills the buffer may be cut short.
  std::wstring path(MAX_PATH, L'\0');
  for (;;) {
    const DWORD length = GetModuleFileNameW(nullptr, path.data(), static_cast<DWORD>(path.size()));
    if (length == 0) throw start_error("cannot find this program's path", last_error_code());
    if (length < path.size()) {
      path.resize(length);
      return path;
    }
    if (path.size() >= 32768) {  // the longest path Windows supports
      throw start_error("cannot find this program's path",
                        std::make_error_code(std::errc::filename_too_long));
    }
    path.resize(path.size() * 2);
  }
}

std::wstring spawn_program() {
  {
    std::lock_guard<std::mutex> lock(executable_mutex);
    if (!executable_override.empty()) return executable_override;
  }
  return own_module_path();
}

// The job every pool worker joins. Closing its last handle — which happens only when this
// process ends, however it ends — kills every worker still in it. Deliberately never closed.
HANDLE worker_job() noexcept {
  static const HANDLE job = []() -> HANDLE {
    // Not inheritable: a child holding it would keep its own job alive.
    HANDLE created = CreateJobObjectW(nullptr, nullptr);
    if (created == nullptr) return nullptr;
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION limits{};
    // BREAKAWAY_OK lets a worker start an mp::process that outlives the pool (see spawn_child).
    limits.BasicLimitInformation.LimitFlags =
        JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_BREAKAWAY_OK;
    if (!SetInformationJobObject(created, JobObjectExtendedLimitInformation, &limits,
                                 sizeof limits)) {
      CloseHandle(created);
      return nullptr;
    }
    return created;
  }();
  return job;
}

// Windows keeps the first name of a variable that appears twice, so the marker must replace
// any inherited one (a spawned child starting children of its own), not be appended after it.
bool is_variable(std::wstring_view entry, std::wstring_view name) noexcept {
  if (entry.size() <= name.size() || entry[name.size()] != L'=') return false;
  return CompareStringOrdinal(entry.data(), static_cast<int>(name.size()), name.data(),
                              static_cast<int>(name.size()), TRUE) == CSTR_EQUAL;
}

// This process's environment plus the marker, in the sorted order CreateProcess expects.
std::wstring environment_with(std::wstring_view name, std::wstring_view value) {
  std::wstring entry_to_add(name);
  entry_to_add += L'=';
  entry_to_add += value;

  LPWCH block = GetEnvironmentStringsW();
  if (block == nullptr) throw start_error("cannot read the environment", last_error_code());
  std::wstring result;
  bool added = false;
  for (const wchar_t* entry = block; *entry != L'\0'; entry += std::wcslen(entry) + 1) {
    const std::wstring_view current(entry);
    if (is_variable(current, name)) continue;
    // Entries such as "=C:=C:\dir" (per-drive directories) stay first, where Windows puts them.
    if (!added && current.front() != L'=' &&
        CompareStringOrdinal(current.data(), static_cast<int>(current.size()), entry_to_add.data(),
                             static_cast<int>(entry_to_add.size()), TRUE) == CSTR_GREATER_THAN) {
      result += entry_to_add;
      result += L'\0';
      added = true;
    }
    result += current;
    result += L'\0';
  }
  FreeEnvironmentStringsW(block);
  if (!added) {
    result += entry_to_add;
    result += L'\0';
  }
  result += L'\0';
  return result;
}

// The handles one CreateProcess call passes on, and the copies it made for that.
class inheritance {
 public:
  inheritance() = default;
  inheritance(const inheritance&) = delete;
  inheritance& operator=(const inheritance&) = delete;
  ~inheritance() {
    for (HANDLE h : duplicates_)
      CloseHandle(h);
    if (list_ != nullptr) DeleteProcThreadAttributeList(list_);
  }

  // A handle the caller owns and closes once the child is started (or failed to start), so
  // its flag is never reset: by then the value may name another thread's new handle.
  void lend(HANDLE h) {
    if (!SetHandleInformation(h, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT)) {
      throw start_error("cannot pass a pipe to the child", last_error_code());
    }
    handles_.push_back(h);
  }

  // A standard handle goes to the child as an inheritable duplicate: changing the flag of the
  // original would race with other threads starting processes. Returns null if there is none
  // or it cannot be duplicated (the child then simply has no such stream).
  HANDLE lend_standard(DWORD which) {
    const HANDLE original = GetStdHandle(which);
    if (original == nullptr || original == INVALID_HANDLE_VALUE) return nullptr;
    HANDLE duplicate = nullptr;
    if (!DuplicateHandle(GetCurrentProcess(), original, GetCurrentProcess(), &duplicate, 0, TRUE,
                         DUPLICATE_SAME_ACCESS)) {
      return nullptr;
    }
    duplicates_.push_back(duplicate);
    handles_.push_back(duplicate);
    return duplicate;
  }

  // Restricts inheritance to exactly the lent handles, so a handle another thread makes
  // inheritable at the same moment never reaches this child.
  LPPROC_THREAD_ATTRIBUTE_LIST attributes() {
    SIZE_T size = 0;
    InitializeProcThreadAttributeList(nullptr, 1, 0, &size);
    storage_.resize(size);
    auto* list = reinterpret_cast<LPPROC_THREAD_ATTRIBUTE_LIST>(storage_.data());
    if (!InitializeProcThreadAttributeList(list, 1, 0, &size)) {
      throw start_error("cannot prepare the child's handle list", last_error_code());
    }
    list_ = list;
    if (!UpdateProcThreadAttribute(list, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, handles_.data(),
                                   handles_.size() * sizeof(HANDLE), nullptr, nullptr)) {
      throw start_error("cannot prepare the child's handle list", last_error_code());
    }
    return list;
  }

 private:
  std::vector<HANDLE> duplicates_;
  std::vector<HANDLE> handles_;  // must outlive the CreateProcess call: the list points here
  std::vector<unsigned char> storage_;
  LPPROC_THREAD_ATTRIBUTE_LIST list_ = nullptr;
};

}  // namespace

child spawn_child(channel& child_end, std::string_view secret, child_kind kind) {
  // The parent's copies of the child's ends go on every path, success or failure: kept, they
  // would hold the pipes open after the child ends (and they are inheritable once lent).
  struct closer {
    channel& end;
    ~closer() { end.close(); }
  } close_child_end{child_end};

  const std::wstring program = spawn_program();
  // Only the program name is on the command line, and Windows paths cannot contain '"', so
  // plain quotes are exact: the C runtime and CommandLineToArgvW read a quoted first argument
  // verbatim, with no backslash escaping. The program is named by lpApplicationName anyway,
  // so nothing is looked up in a search path.
  std::wstring command_line = L"\"" + program + L"\"";

  const auto read_end = child_end.read_handle();
  const auto write_end = child_end.write_handle();
  const bool worker = kind == child_kind::pool_worker;
  // "<read handle>,<write handle>,<kind>": handle values stay the same in the child.
  std::string token =
      std::to_string(read_end) + "," + std::to_string(write_end) + (worker ? ",w" : ",p");
  std::wstring marker = widen(token) + L";" + widen(secret);
  std::wstring environment = environment_with(widen(spawn_marker_variable), marker);

  inheritance inherited;
  inherited.lend(as_handle(read_end));
  inherited.lend(as_handle(write_end));
  STARTUPINFOEXW startup{};
  startup.StartupInfo.cb = sizeof startup;
  startup.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
  startup.StartupInfo.hStdInput = inherited.lend_standard(STD_INPUT_HANDLE);
  startup.StartupInfo.hStdOutput = inherited.lend_standard(STD_OUTPUT_HANDLE);
  startup.StartupInfo.hStdError = inherited.lend_standard(STD_ERROR_HANDLE);
  startup.lpAttributeList = inherited.attributes();

  DWORD flags = CREATE_UNICODE_ENVIRONMENT | EXTENDED_STARTUPINFO_PRESENT;
  // A worker must not run a single instruction outside the job, or it could outlive a parent
  // that dies at that moment: it starts suspended and resumes once it is in.
  if (worker) flags |= CREATE_SUSPENDED;
  // A child shares its parent's console. A parent without one (a GUI program, or output
  // redirected under Wine) gets children without one too: CREATE_NO_WINDOW would instead give
  // every child a console of its own, i.e. a conhost.exe started and ended per child. The
  // standard handles passed above work either way.
  if (GetConsoleCP() == 0) flags |= DETACHED_PROCESS;
  const bool break_away = !worker && running_in_worker_job.load();

  PROCESS_INFORMATION info{};
  BOOL created = CreateProcessW(program.c_str(), command_line.data(), nullptr, nullptr, TRUE,
                                flags | (break_away ? CREATE_BREAKAWAY_FROM_JOB : 0),
                                environment.data(), nullptr, &startup.StartupInfo, &info);
  if (!created && break_away && GetLastError() == ERROR_ACCESS_DENIED) {
    // An enclosing job (not ours) forbids breaking away; the child then stays in the jobs
    // this worker is in, as any process it started would.
    created = CreateProcessW(program.c_str(), command_line.data(), nullptr, nullptr, TRUE, flags,
                             environment.data(), nullptr, &startup.StartupInfo, &info);
  }
  if (!created) {
    const std::error_code error = last_error_code();
    const std::string path = utf16_to_utf8(program);
    throw start_error("cannot start " + path, error);
  }
  // The child has its copies now.
  child_end.close();

  if (worker) {
    // Best effort: where jobs cannot nest (Windows 7) or the job could not be made, the worker
    // still exits when its channel closes, which happens when this process ends.
    const HANDLE job = worker_job();
    if (job != nullptr) AssignProcessToJobObject(job, info.hProcess);
    if (ResumeThread(info.hThread) == static_cast<DWORD>(-1)) {
      const std::error_code error = last_error_code();
      TerminateProcess(info.hProcess, 1);
      WaitForSingleObject(info.hProcess, INFINITE);
      CloseHandle(info.hThread);
      CloseHandle(info.hProcess);
      throw start_error("cannot start a worker", error);
    }
  }
  CloseHandle(info.hThread);
  return child(static_cast<long>(info.dwProcessId), as_native(info.hProcess));
}

channel adopt_inherited_channel(std::string_view token) {
  // Accepts exactly what spawn_child writes: "<read>,<write>" and an optional ",<kind>".
  native_handle values[2] = {invalid_handle, invalid_handle};
  const char* next = token.data();
  const char* const end = token.data() + token.size();
  for (int i = 0; i < 2; ++i) {
    if (i == 1) {
      if (next == end || *next != ',') return {};
      ++next;
    }
    long long value = 0;
    const auto parsed = std::from_chars(next, end, value);
    if (parsed.ec != std::errc() || value <= 0) return {};
    values[i] = static_cast<native_handle>(value);
    next = parsed.ptr;
  }
  bool worker = false;
  if (next != end) {
    if (end - next != 2 || next[0] != ',' || (next[1] != 'w' && next[1] != 'p')) return {};
    worker = next[1] == 'w';
  }
  for (const native_handle value : values) {
    // A token naming no pipe (a stale or forged marker) gives a closed channel, and the handle
    // stops being inheritable so that no child of this one receives it by accident.
    const HANDLE h = as_handle(value);
    DWORD handle_flags = 0;
    if (!GetHandleInformation(h, &handle_flags) || GetFileType(h) != FILE_TYPE_PIPE) return {};
    SetHandleInformation(h, HANDLE_FLAG_INHERIT, 0);
  }
  running_in_worker_job.store(worker);
  return channel(values[0], values[1]);
}

bool die_with_parent(long expected_parent) noexcept {
  // Nothing to arm: a pool worker is in its parent's kill-on-close job from its first
  // instruction, and it also ends when it reads end of stream on its channel. This only tells
  // whether the parent has already ended; when that cannot be told (no access), it has not.
  const HANDLE parent = OpenProcess(SYNCHRONIZE, FALSE, static_cast<DWORD>(expected_parent));
  if (parent == nullptr) return GetLastError() != ERROR_INVALID_PARAMETER;  // no such process
  const bool ended = WaitForSingleObject(parent, 0) == WAIT_OBJECT_0;
  CloseHandle(parent);
  return !ended;
}

void take_parent_name(long) noexcept {}

void set_spawn_executable(std::string utf8_path) {
  std::wstring wide = widen(utf8_path);
  std::lock_guard<std::mutex> lock(executable_mutex);
  executable_override = std::move(wide);
}

}  // namespace multiproc::detail::os
