// The POSIX descriptor registry: which descriptors are the library's, so that a forked child
// can close those it must not hold (a worker holding another worker's pipe would hide that
// worker's death), and the epoch that keeps objects from before a fork from closing numbers
// the child has reused since.
#pragma once

#include <shared_mutex>

namespace multiproc::detail::os::posix {

/// Records `fd` as the library's. A fixed table of atomics: usable between fork and _exit,
/// never allocates. A full table (16384 descriptors) leaves the descriptor unregistered: a
/// forked child may then hold it.
void register_descriptor(int fd) noexcept;
/// Unregisters and closes `fd` with no fork in between, if it was opened in the current
/// epoch(); one from an older epoch was closed by a fork clean-up already, and its number may
/// belong to anything by now: it is left alone.
void close_registered(int fd, unsigned opened_in) noexcept;
/// In a forked child: closes every registered descriptor except `keep_a` and `keep_b`, and
/// starts a new epoch (the objects holding the kept two never close them: the child _exit()s
/// with them).
void close_registered_descriptors(int keep_a, int keep_b) noexcept;
/// The number of fork clean-ups this process went through.
unsigned epoch() noexcept;

/// Held shared from creating a library descriptor until it is registered (or closed), and
/// exclusively across fork(): a forked child never holds a descriptor it could not close.
std::shared_mutex& descriptor_creation_mutex();
struct creating_descriptors {
  std::shared_lock<std::shared_mutex> lock{descriptor_creation_mutex()};
};

}  // namespace multiproc::detail::os::posix
