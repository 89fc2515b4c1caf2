// What macOS tells about processes (see platform.hpp), the twin of process_info_portable.cpp:
// macOS has no /proc, so the executable's path comes from dyld, a process's start time from
// libproc, and the environment through _NSGetEnviron (a shared library cannot link against
// `environ` there). Written for macOS and built only there (CMake, APPLE): the Linux machines
// that develop this project cannot compile it; the workflow's macOS job does.
#include <crt_externs.h>
#include <libproc.h>
#include <mach-o/dyld.h>
#include <sys/proc_info.h>

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "platform.hpp"

namespace multiproc::detail::os::posix::platform {

std::string executable_path() {
  // The path the program was started by, which may hold symbolic links or "..": resolved, so
  // a later chdir() of the program does not change what it names.
  std::uint32_t size = 0;
  _NSGetExecutablePath(nullptr, &size);  // fails, telling the size needed
  std::vector<char> path(size + 1, '\0');
  if (_NSGetExecutablePath(path.data(), &size) != 0) return {};
  char resolved[PATH_MAX];
  if (::realpath(path.data(), resolved) != nullptr) return resolved;
  return path.data();
}

std::uint64_t process_start_time(long pid) noexcept {
  proc_bsdinfo info{};
  const int got = ::proc_pidinfo(static_cast<pid_t>(pid), PROC_PIDTBSDINFO, 0, &info, sizeof info);
  if (got != static_cast<int>(sizeof info)) return 0;  // gone, or not ours to inspect
  return static_cast<std::uint64_t>(info.pbi_start_tvsec) * 1000000u +
         static_cast<std::uint64_t>(info.pbi_start_tvusec);
}

char** environment() noexcept {
  return *_NSGetEnviron();
}

}  // namespace multiproc::detail::os::posix::platform
