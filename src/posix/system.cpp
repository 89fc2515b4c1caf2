// Facts about this process on POSIX.
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/random.h>
#endif

#include <cerrno>

#include <multiproc/errors.hpp>

#include "../backend.hpp"

namespace multiproc::detail::os {

long current_pid() noexcept {
  return static_cast<long>(::getpid());
}
long parent_pid() noexcept {
  return static_cast<long>(::getppid());
}

unsigned hardware_cpu_count() noexcept {
#if defined(__linux__)
  // The CPUs this process may run on (taskset, cgroups cpusets), as os.process_cpu_count().
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return static_cast<unsigned>(CPU_COUNT(&set));
#endif
  const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1u;
}

void unset_environment(const char* name) noexcept {
  ::unsetenv(name);
}

void random_bytes(void* buffer, std::size_t size) {
  auto* out = static_cast<unsigned char*>(buffer);
#if defined(__linux__)
  while (size > 0) {
    const ssize_t got = ::getrandom(out, size, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw start_error("multiproc: no random bytes for the spawn secret",
                        {errno, std::generic_category()});
    }
    out += got;
    size -= static_cast<std::size_t>(got);
  }
#else
  arc4random_buf(out, size);
#endif
}

}  // namespace multiproc::detail::os
