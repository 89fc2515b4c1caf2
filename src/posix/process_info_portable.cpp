// What the portable POSIX build learns about processes from the system (see platform.hpp),
// where there is no Apple-specific way (process_info_darwin.cpp): the BSDs, and Linux in the
// MULTIPROC_POSIX_PORTABLE build.
#include <unistd.h>

#include <cstdint>
#include <string>

#include "platform.hpp"

extern char** environ;

namespace multiproc::detail::os::posix::platform {

std::string executable_path() {
  // argv[0] is not reliable: the kernel's link to the running image where there is one (Linux,
  // also in the portable build; the BSDs where procfs is mounted). macOS has none:
  // process_info_darwin.cpp asks dyld.
  for (const char* link : {"/proc/self/exe", "/proc/curproc/file"}) {
    if (::access(link, F_OK) == 0) return link;
  }
  return "/proc/self/exe";
}

std::uint64_t process_start_time(long) noexcept {
  return 0;
}

char** environment() noexcept {
  return environ;
}

}  // namespace multiproc::detail::os::posix::platform
