// The Linux extras of the POSIX backend (see platform.hpp).
#include "platform.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <multiproc/errors.hpp>

#include "descriptors.hpp"

extern char** environ;

namespace multiproc::detail::os::posix::platform {

int open_process_descriptor_locked(long pid) noexcept {
#if defined(SYS_pidfd_open)
  // A pidfd lets join(timeout) sleep in poll() instead of polling waitpid.
  const long fd = ::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0);
  if (fd >= 0) {
    ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
    register_descriptor(static_cast<int>(fd));
    return static_cast<int>(fd);
  }
#else
  (void)pid;
#endif
  return -1;  // kernel older than 5.3
}

bool signal_process_descriptor(int pidfd, int signal_number) noexcept {
#if defined(SYS_pidfd_send_signal)
  return ::syscall(SYS_pidfd_send_signal, pidfd, signal_number, nullptr, 0) == 0;
#else
  (void)pidfd;
  (void)signal_number;
  return false;
#endif
}

bool make_cloexec_socketpair(int type, int fds[2]) noexcept {
  return ::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) == 0;
}

void prepare_socket(int) noexcept {}

int send_no_signal_flag() noexcept {
  return MSG_NOSIGNAL;
}

int receive_cloexec_flag() noexcept {
  return MSG_CMSG_CLOEXEC;
}

void set_cloexec(int) noexcept {}

bool add_close_from(posix_spawn_file_actions_t* actions, int lowest) noexcept {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  return posix_spawn_file_actions_addclosefrom_np(actions, lowest) == 0;
#else
  (void)actions;
  (void)lowest;
  return false;
#endif
}

short extra_spawn_flags() noexcept {
  return 0;
}

std::string executable_path() {
  return "/proc/self/exe";
}

char** environment() noexcept {
  return environ;
}

void take_parent_name(long parent) noexcept {
  // 16 bytes at most, newline included.
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%ld/comm", parent);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char name[17] = {};
  const ssize_t got = ::read(fd, name, sizeof name - 1);
  ::close(fd);
  if (got <= 0) return;
  if (name[got - 1] == '\n') name[got - 1] = '\0';
  ::prctl(PR_SET_NAME, name);
}

void kill_me_when_parent_dies() noexcept {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
}

std::uint64_t process_start_time(long pid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char text[1024];
  const ssize_t got = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  if (got <= 0) return 0;
  text[got] = '\0';
  // Field 22 (starttime); the name (field 2) may hold spaces and ')', so count after the last.
  const char* p = std::strrchr(text, ')');
  if (p == nullptr) return 0;
  for (int field = 2; field < 22 && p != nullptr; ++field)
    p = std::strchr(p + 1, ' ');
  return p == nullptr ? 0 : std::strtoull(p + 1, nullptr, 10);
}

unsigned affinity_cpu_count() noexcept {
  // The CPUs this process may run on (taskset, cgroups cpusets), as os.process_cpu_count().
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return static_cast<unsigned>(CPU_COUNT(&set));
  return 0;
}

void prepare_fresh_memory(void* data, std::size_t bytes) noexcept {
#if defined(MADV_POPULATE_WRITE)
  constexpr int populate_write = MADV_POPULATE_WRITE;
#else
  constexpr int populate_write = 23;  // Linux 5.14; older kernels refuse it with EINVAL
#endif
  // Only the whole pages inside the range: the ones at its ends may hold the allocator's data.
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(data);
  const std::uintptr_t first = (begin + page - 1) / page * page;
  const std::uintptr_t last = (begin + bytes) / page * page;
  if (last <= first) return;
  void* const range = reinterpret_cast<void*>(first);
  ::madvise(range, last - first, MADV_HUGEPAGE);
  ::madvise(range, last - first, populate_write);
}

void fill_random(void* buffer, std::size_t size) {
  auto* out = static_cast<unsigned char*>(buffer);
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
}

}  // namespace multiproc::detail::os::posix::platform
