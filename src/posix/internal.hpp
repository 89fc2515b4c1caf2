// POSIX backend internals shared by its files.
#pragma once

#include <mutex>
#include <shared_mutex>
#include <system_error>

namespace multiproc::detail::os::posix {

/// The library's own descriptors, so a forked child can close those it must not hold (a
/// worker holding another worker's pipe would hide that worker's death). A fixed table of
/// atomics: usable between fork and _exit, no allocation.
void register_descriptor(int fd) noexcept;
/// True if `fd` was registered (it is not any more).
bool unregister_descriptor(int fd) noexcept;
/// Unregisters and closes `fd` with no fork in between, if it was opened in this process's
/// current descriptor_generation(); an older one was closed by a fork clean-up already, and
/// its number may belong to anything by now: it is left alone.
void close_registered(int fd, unsigned opened_in) noexcept;
/// In a forked child: closes every registered descriptor except `keep_a` and `keep_b`, and
/// starts a new descriptor_generation() (the objects holding the kept two never close them:
/// the child _exit()s with them).
void close_registered_descriptors(int keep_a, int keep_b) noexcept;

/// Held shared from creating a library descriptor until it is registered (or closed), and
/// exclusively across fork(): a forked child never holds a descriptor it could not close.
std::shared_mutex& descriptor_creation_mutex();
struct creating_descriptors {
  std::shared_lock<std::shared_mutex> lock{descriptor_creation_mutex()};
};

/// Held across fork() so no other thread holds it at the moment of the fork.
std::mutex& code_cache_mutex();

inline std::system_error last_error(const char* what) {
  return std::system_error(errno, std::generic_category(), what);
}

}  // namespace multiproc::detail::os::posix
