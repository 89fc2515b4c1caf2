// Facts about this process on POSIX.
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../os/system.hpp"
#include "platform.hpp"

namespace multiproc::detail::os {

long current_pid() noexcept {
  return static_cast<long>(::getpid());
}
long parent_pid() noexcept {
  return static_cast<long>(::getppid());
}

unsigned hardware_cpu_count() noexcept {
  if (const unsigned allowed = posix::platform::affinity_cpu_count(); allowed != 0) return allowed;
  const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 0u;
}

void unset_environment(const char* name) noexcept {
  ::unsetenv(name);
}

void random_bytes(void* buffer, std::size_t size) {
  posix::platform::fill_random(buffer, size);
}

bool stderr_is_terminal() noexcept {
  return ::isatty(STDERR_FILENO) == 1;
}

int stderr_terminal_columns() noexcept {
  struct winsize size {};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) != 0) return 0;
  return size.ws_col;
}

}  // namespace multiproc::detail::os
