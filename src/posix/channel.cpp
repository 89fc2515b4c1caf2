// POSIX channels: a Unix stream socketpair, close-on-exec from birth, SIGPIPE never raised by
// its writes, descriptors carried with the bytes (SCM_RIGHTS).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <multiproc/errors.hpp>

#include "../os/channel.hpp"
#include "descriptors.hpp"
#include "internal.hpp"
#include "platform.hpp"

namespace multiproc::detail::os {

namespace {
/// Most descriptors one sendmsg carries (Linux: SCM_MAX_FD).
constexpr std::size_t descriptors_per_message = 253;

int fd_of(const owned_handle& handle) {
  return static_cast<int>(handle.get());
}
}  // namespace

std::size_t channel::read_some(void* buffer, std::size_t size) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * descriptors_per_message)];
  for (;;) {
    iovec part{buffer, size};
    msghdr message{};
    message.msg_iov = &part;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    // Received descriptors are created close-on-exec; registered below under the lock, so a
    // fork in between could hand them to a child (the one gap the lock cannot close).
    const ssize_t got = ::recvmsg(fd_of(read_), &message, posix::platform::receive_cloexec_flag());
    if (got < 0) {
      if (errno == EINTR) continue;
      throw posix::last_error("multiproc: reading from a channel");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const posix::creating_descriptors guard;
      for (std::size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        posix::platform::set_cloexec(fd);
        posix::register_descriptor(fd, handle_kind::travelling);
        attached_.emplace_back(fd, handle_kind::travelling);
      }
    }
    return static_cast<std::size_t>(got);
  }
}

bool channel::readable_now() const noexcept {
  pollfd p{fd_of(read_), POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;  // POLLIN, or POLLHUP/POLLERR: a read would not wait either
}

void channel::write_all(const void* data, std::size_t size,
                        std::span<const native_handle> attached) {
  const int fd = static_cast<int>(write_handle());
  const char* bytes = static_cast<const char*>(data);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * descriptors_per_message)];
  while (size > 0) {
    iovec part{const_cast<char*>(bytes), size};
    msghdr message{};
    message.msg_iov = &part;
    message.msg_iovlen = 1;
    const std::size_t carried = std::min(attached.size(), descriptors_per_message);
    if (carried != 0) {
      // The descriptors ride with the first byte of this write: the reader gets them with it.
      part.iov_len = std::min<std::size_t>(size, carried == attached.size() ? size : 1);
      message.msg_control = control;
      message.msg_controllen = CMSG_SPACE(sizeof(int) * carried);
      cmsghdr* c = CMSG_FIRSTHDR(&message);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * carried);
      for (std::size_t i = 0; i < carried; ++i) {
        const int each = static_cast<int>(attached[i]);
        std::memcpy(CMSG_DATA(c) + i * sizeof(int), &each, sizeof each);
      }
    }
    const ssize_t wrote = ::sendmsg(fd, &message, posix::platform::send_no_signal_flag());
    if (wrote < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "multiproc: writing to a channel");
    }
    if (carried != 0) attached = attached.subspan(carried);
    bytes += wrote;
    size -= static_cast<std::size_t>(wrote);
  }
  if (!attached.empty()) {
    throw std::invalid_argument("multiproc: more descriptors to send than bytes to carry them");
  }
}

std::size_t channel::write_capacity() const noexcept {
  int size = 0;
  socklen_t length = sizeof size;
  if (::getsockopt(static_cast<int>(write_handle()), SOL_SOCKET, SO_SNDBUF, &size, &length) != 0 ||
      size <= 0) {
    return 16 * 1024;
  }
  // What a socket buffer holds is counted with the kernel's own overhead: about half of it is
  // data.
  return static_cast<std::size_t>(size) / 2;
}

owned_handle channel::take_attached() noexcept {
  if (attached_.empty()) return {};
  owned_handle first = std::move(attached_.front());
  attached_.pop_front();
  return first;
}

void channel::close_write() noexcept {
  if (write_) {
    write_.reset();
  } else if (read_) {
    ::shutdown(fd_of(read_), SHUT_WR);
  }
}

std::pair<channel, channel> make_channel_pair() {
  const posix::creating_descriptors guard;
  int ends[2];
  if (!posix::platform::make_cloexec_socketpair(SOCK_STREAM, ends)) {
    throw start_error("multiproc: could not create a channel", {errno, std::generic_category()});
  }
  for (int fd : ends) {
    posix::platform::prepare_socket(fd);
    posix::register_descriptor(fd);
  }
  return {channel(ends[0], ends[0]), channel(ends[1], ends[1])};
}

std::uint64_t pass_handle(native_handle handle, const child&,
                          std::vector<native_handle>& attached) {
  attached.push_back(handle);
  return 0;
}

owned_handle accept_handle(std::uint64_t, channel& from) {
  owned_handle handle = from.take_attached();
  if (!handle) throw std::runtime_error("multiproc: a frame names a descriptor that never came");
  return handle;
}

void block_broken_pipe_signal_in_this_thread() noexcept {
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, nullptr);
}

}  // namespace multiproc::detail::os
