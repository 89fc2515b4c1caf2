// The portable counterparts of the POSIX backend's Linux extras (see platform.hpp): what a
// POSIX system without them (macOS, the BSDs) gets, and what MULTIPROC_POSIX_PORTABLE builds
// on Linux so these paths are tested there.
#include "platform.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <multiproc/errors.hpp>

namespace multiproc::detail::os::posix::platform {

int open_process_descriptor_locked(long) noexcept {
  return -1;
}

bool make_cloexec_pipe(int fds[2]) noexcept {
  if (::pipe(fds) != 0) return false;
  ::fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  ::fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  return true;
}

void enlarge_pipe(int) noexcept {}

std::size_t pipe_capacity(int) noexcept {
  return 16 * 1024;
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

std::string executable_path() {
  // argv[0] is not reliable; the BSDs offer this link where procfs is mounted.
  return "/proc/curproc/file";
}

void kill_me_when_parent_dies() noexcept {}

unsigned affinity_cpu_count() noexcept {
  return 0;
}

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
