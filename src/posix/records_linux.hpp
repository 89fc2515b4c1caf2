// Records on a Unix seqpacket socket with descriptors attached (SCM_RIGHTS) and the sender's
// pid (SCM_CREDENTIALS): what the fork server and its requesters exchange. Linux only
// (SO_PASSCRED, MSG_CMSG_CLOEXEC); the portable POSIX build has no fork server.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <utility>
#include <vector>

#include "../os/handle.hpp"

namespace multiproc::detail::os::posix {

/// The most descriptors one record carries.
constexpr std::size_t max_attached_descriptors = 6;

/// Sends one record (`size` bytes at `data`) with `count` descriptors of `fds` attached
/// (count <= max_attached_descriptors), whole or not at all. Returns false with errno set on
/// failure (EMSGSIZE if the socket took only part of it). Never throws.
bool send_record(int fd, const void* data, std::size_t size, const int* fds, std::size_t count);

/// One record received, with what came along.
struct received {
  ssize_t size = -1;  ///< the record's size; 0 at end of stream; -1: failed with `error`
  int error = 0;
  bool whole = true;              ///< false if the record or its descriptors were cut short
  std::vector<owned_handle> fds;  ///< registered as the library's, close-on-exec
  long sender = 0;                ///< the sending process, as the kernel tells (SO_PASSCRED)
};

/// Blocks until a record is there on `fd`, then takes it into `data` (`size` bytes at most),
/// registering the descriptors that came along under the descriptor lock (no fork falls
/// between their arrival and their registration); at most `limit` (none: no limit), after
/// which it fails with ETIMEDOUT. Failures are in the result, never thrown (but bad_alloc).
received receive_record(int fd, void* data, std::size_t size,
                        std::optional<std::chrono::milliseconds> limit = std::nullopt);

/// A seqpacket socket pair, close-on-exec, registered as the library's. Throws start_error.
std::pair<owned_handle, owned_handle> seqpacket_pair();

}  // namespace multiproc::detail::os::posix
