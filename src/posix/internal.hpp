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
/// (forkserver_linux.cpp writes it, child.cpp reads it): one record, then end of stream. A
/// child that returns from its role first sends one of its own, `by_signal == exiting`, with
/// the status it is about to exit with: its requester then learns the end from the pidfd,
/// without waiting for the server to reap and report.
struct end_report {
  static constexpr std::int32_t exiting = 2;
  std::int32_t by_signal;  ///< 0, 1, or `exiting`
  std::int32_t value;      ///< the signal number, or the exit status
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

/// In a forked child whose role is done: writes what the standard streams hold (C++ and C),
/// and nothing else (any other FILE may hold bytes of the parent's; fork.cpp).
void flush_own_output();

}  // namespace multiproc::detail::os::posix
