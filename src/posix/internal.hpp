// POSIX backend internals shared by its files.
#pragma once

#include <cerrno>
#include <mutex>
#include <system_error>

namespace multiproc::detail::os::posix {

/// Held across fork() (besides the descriptor creation lock) so no other thread holds it at
/// the moment of the fork: the cache of loaded modules (code_identity.cpp).
std::mutex& code_cache_mutex();

inline std::system_error last_error(const char* what) {
  return std::system_error(errno, std::generic_category(), what);
}

}  // namespace multiproc::detail::os::posix
