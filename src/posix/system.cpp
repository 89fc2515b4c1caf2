// Facts about this process on POSIX.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include <atomic>

#include "../os/system.hpp"
#include "internal.hpp"
#include "platform.hpp"

namespace multiproc::detail::os {

namespace posix {
namespace {
// Set once, in a fork server's child, before it runs anything of the program.
std::atomic<long> requester{0};
std::atomic<long> server{0};
}  // namespace

long logical_parent() noexcept {
  const long parent = static_cast<long>(::getppid());
  const long asked_by = requester.load(std::memory_order_relaxed);
  // Once the server is gone (it ends with its requester) the child is re-parented, and its
  // parent is whatever the system made it, as after any parent's end.
  return asked_by != 0 && parent == server.load(std::memory_order_relaxed) ? asked_by : parent;
}

void set_logical_parent(long asked_by, long parent) noexcept {
  server.store(parent, std::memory_order_relaxed);
  requester.store(asked_by, std::memory_order_relaxed);
}
}  // namespace posix

long current_pid() noexcept {
  return static_cast<long>(::getpid());
}
long parent_pid() noexcept {
  return posix::logical_parent();
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

unsigned thread_count() noexcept {
  // Field 20 of /proc/self/stat (num_threads): one small read, cheaper than listing
  // /proc/self/task. The name (field 2) may hold spaces and ')', so count after the last ')'.
  const int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;  // no procfs (macOS): unknown
  char text[1024];
  const ssize_t got = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  if (got <= 0) return 0;
  text[got] = '\0';
  const char* p = std::strrchr(text, ')');
  for (int field = 2; field < 20 && p != nullptr; ++field)
    p = std::strchr(p + 1, ' ');
  if (p == nullptr) return 0;
  const unsigned long threads = std::strtoul(p + 1, nullptr, 10);
  return threads > 1000000 ? 0 : static_cast<unsigned>(threads);
}

void prepare_fresh_memory(void* data, std::size_t bytes) noexcept {
  posix::platform::prepare_fresh_memory(data, bytes);
}

void ignore_interrupts() noexcept {
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGINT, &ignore, nullptr);
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
