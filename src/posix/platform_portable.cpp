// The portable counterparts of the POSIX backend's Linux extras (see platform.hpp): what a
// POSIX system without them (macOS, the BSDs) gets, and what MULTIPROC_POSIX_PORTABLE builds
// on Linux so these paths are tested there. What only the system itself can tell (the
// executable's path, a process's start time, the environment) is in process_info_portable.cpp,
// or process_info_darwin.cpp on macOS.
#include "platform.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include <multiproc/errors.hpp>

namespace multiproc::detail::os::posix::platform {

int open_process_descriptor_locked(long) noexcept {
  return -1;
}

bool signal_process_descriptor(int, int) noexcept {
  return false;
}

bool make_cloexec_socketpair(int type, int fds[2]) noexcept {
  if (::socketpair(AF_UNIX, type, 0, fds) != 0) return false;
  set_cloexec(fds[0]);
  set_cloexec(fds[1]);
  return true;
}

void prepare_socket(int fd) noexcept {
#if defined(SO_NOSIGPIPE)
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof on);
#else
  (void)fd;
#endif
}

int send_no_signal_flag() noexcept {
#if defined(MSG_NOSIGNAL)
  return MSG_NOSIGNAL;
#else
  return 0;  // prepare_socket() set SO_NOSIGPIPE instead
#endif
}

int receive_cloexec_flag() noexcept {
  return 0;
}

void set_cloexec(int fd) noexcept {
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
}

bool add_close_from(posix_spawn_file_actions_t*, int) noexcept {
  return false;
}

short extra_spawn_flags() noexcept {
#if defined(POSIX_SPAWN_CLOEXEC_DEFAULT)
  return POSIX_SPAWN_CLOEXEC_DEFAULT;
#else
  return 0;
#endif
}

void take_parent_name(long) noexcept {}

void kill_me_when_parent_dies() noexcept {
  // No kernel call for it: a thread notices the parent's end by this process being re-parented
  // (getppid() changes), and ends the process as PR_SET_PDEATHSIG would, with SIGKILL. Looking
  // every 200 ms costs four wake-ups a second per worker and keeps "parent killed -> workers
  // gone within 5 s". Not the channel's end of stream: a worker may be busy in a task for
  // minutes, and macOS poll() cannot wait for a hang-up alone without waking on every message.
  const pid_t parent = ::getppid();
  sigset_t all;
  sigfillset(&all);
  sigset_t previous;
  // Every signal is the program's threads' to handle, never the watcher's.
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  pthread_t watcher;
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attributes, 64 * 1024);
  static pid_t watched_parent;
  watched_parent = parent;
  pthread_create(
      &watcher, &attributes,
      [](void*) -> void* {
        for (;;) {
          ::usleep(200000);
          if (::getppid() != watched_parent) ::kill(::getpid(), SIGKILL);
        }
      },
      nullptr);
  pthread_attr_destroy(&attributes);
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

unsigned affinity_cpu_count() noexcept {
  return 0;
}

void prepare_fresh_memory(void*, std::size_t) noexcept {}

void fill_random(void* buffer, std::size_t size) {
  const int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw start_error("multiproc: no random bytes for the spawn secret",
                      {errno, std::generic_category()});
  }
  auto* out = static_cast<unsigned char*>(buffer);
  while (size > 0) {
    const ssize_t got = ::read(fd, out, size);
    if (got <= 0) {
      if (got < 0 && errno == EINTR) continue;
      const int saved = got < 0 ? errno : EIO;
      ::close(fd);
      throw start_error("multiproc: no random bytes for the spawn secret",
                        {saved, std::generic_category()});
    }
    out += got;
    size -= static_cast<std::size_t>(got);
  }
  ::close(fd);
}

}  // namespace multiproc::detail::os::posix::platform
