// POSIX backend internals shared by its files.
#pragma once

#include <cerrno>
#include <cstdint>
#include <mutex>
#include <system_error>

namespace multiproc::detail::os::posix {

/// Held across fork() (besides the descriptor creation lock) so no other thread holds it at
/// the moment of the fork: the cache of loaded modules (code_identity.cpp).
std::mutex& code_cache_mutex();

/// What the fork server sends on a child's report socket once it has reaped the child
/// (forkserver_linux.cpp writes it, child.cpp reads it): one record, then end of stream.
struct end_report {
  std::int32_t by_signal;
  std::int32_t value;  ///< the signal number, or the exit status
};

/// The process that started this one: getppid(), except in a child of the fork server, where
/// it is the process that asked the server for it (the requester), for as long as the server
/// is its parent. Shared blocks come from this process (/proc/<it>/fd/...).
long logical_parent() noexcept;
/// In a child of the fork server: `requester` asked for it; `server` is its parent.
void set_logical_parent(long requester, long server) noexcept;

inline std::system_error last_error(const char* what) {
  return std::system_error(errno, std::generic_category(), what);
}

}  // namespace multiproc::detail::os::posix
