// Records on a Unix seqpacket socket with descriptors attached (see records_linux.hpp).
#include "records_linux.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <multiproc/errors.hpp>

#include "descriptors.hpp"
#include "platform.hpp"

namespace multiproc::detail::os::posix {

bool send_record(int fd, const void* data, std::size_t size, const int* fds, std::size_t count) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_attached_descriptors)];
  iovec part{const_cast<void*>(data), size};
  msghdr message{};
  message.msg_iov = &part;
  message.msg_iovlen = 1;
  if (count != 0) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    cmsghdr* c = CMSG_FIRSTHDR(&message);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * count);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * count);
  }
  for (;;) {
    const ssize_t sent = ::sendmsg(fd, &message, MSG_NOSIGNAL);
    if (sent == static_cast<ssize_t>(size)) return true;
    if (sent < 0 && errno == EINTR) continue;
    if (sent >= 0) errno = EMSGSIZE;  // a seqpacket record goes whole or not at all
    return false;
  }
}

received receive_record(int fd, void* data, std::size_t size,
                        std::optional<std::chrono::milliseconds> limit) {
  received got;
  const auto give_up = std::chrono::steady_clock::now() + limit.value_or(std::chrono::hours(0));
  for (;;) {
    pollfd watch{fd, POLLIN, 0};
    int wait_ms = -1;
    if (limit) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(give_up - std::chrono::steady_clock::now());
      wait_ms = static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 1 << 30));
    }
    const int ready = ::poll(&watch, 1, wait_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      got.error = errno;
      return got;
    }
    if (ready == 0) {
      got.error = ETIMEDOUT;
      return got;
    }
    // The record is there: taken under the descriptor lock without waiting, so no fork of
    // another thread falls between the descriptors' arrival and their registration.
    const creating_descriptors guard;
    alignas(cmsghdr) char
        control[CMSG_SPACE(sizeof(int) * max_attached_descriptors) + CMSG_SPACE(sizeof(ucred))];
    iovec part{data, size};
    msghdr message{};
    message.msg_iov = &part;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    got.size = ::recvmsg(fd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (got.size < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (got.size < 0) {
      got.error = errno;
      return got;
    }
    got.whole = (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
      if (c->cmsg_level != SOL_SOCKET) continue;
      if (c->cmsg_type == SCM_RIGHTS) {
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
          int each;
          std::memcpy(&each, CMSG_DATA(c) + i * sizeof(int), sizeof each);
          register_descriptor(each);
          got.fds.emplace_back(each);
        }
      } else if (c->cmsg_type == SCM_CREDENTIALS) {
        ucred credentials{};
        std::memcpy(&credentials, CMSG_DATA(c), sizeof credentials);
        got.sender = static_cast<long>(credentials.pid);
      }
    }
    return got;
  }
}

std::pair<owned_handle, owned_handle> seqpacket_pair() {
  const creating_descriptors guard;
  int ends[2];
  if (!platform::make_cloexec_socketpair(SOCK_SEQPACKET, ends)) {
    throw start_error("multiproc: could not create a socket pair",
                      {errno, std::generic_category()});
  }
  for (int fd : ends) {
    platform::prepare_socket(fd);
    register_descriptor(fd);
  }
  return {owned_handle(ends[0]), owned_handle(ends[1])};
}

}  // namespace multiproc::detail::os::posix
