// The POSIX descriptor registry: which descriptors are the library's, so that a forked child
// can close those it must not hold (a worker holding another worker's pipe would hide that
// worker's death), and the epochs that keep objects from before a fork from closing numbers
// the child has reused since.
//
// Two kinds: the library's internal descriptors (channels, pidfds, payload blocks) are closed
// in every forked child, mp::fork()'s included; travelling ones (behind mp::queue, mp::pipe and
// the shared-state objects, which a user may keep across os.fork as in Python) are closed in
// the children the library forks itself -- except those passed to the child as arguments.
#pragma once

#include <cstddef>
#include <shared_mutex>
#include <span>

#include "../os/handle.hpp"

namespace multiproc::detail::os::posix {

/// Records `fd` as the library's. A fixed table of atomics: usable between fork and _exit,
/// never allocates. A full table (16384 descriptors) leaves the descriptor unregistered: a
/// forked child may then hold it.
void register_descriptor(int fd, handle_kind kind = handle_kind::internal) noexcept;
/// Unregisters and closes `fd` with no fork in between, if it was opened in the current
/// epoch of its kind (`stamp`, from stamp_of()); one from an older epoch was closed by a fork
/// clean-up already, and its number may belong to anything by now: it is left alone.
void close_registered(int fd, std::uint32_t stamp) noexcept;
/// The stamp an owned_handle of `kind` opened now carries.
std::uint32_t stamp_of(handle_kind kind) noexcept;
/// In a forked child: closes every registered internal descriptor, and every travelling one
/// too if `travelling_too`, except the descriptors in `keep`; starts a new epoch
/// for each kind it closed (the objects holding kept ones never close them: a kept internal
/// one is the child's channel, which it _exit()s with).
void close_registered_descriptors(std::span<const native_handle> keep,
                                  bool travelling_too) noexcept;

/// Held shared from creating a library descriptor until it is registered (or closed), and
/// exclusively across fork(): a forked child never holds a descriptor it could not close.
std::shared_mutex& descriptor_creation_mutex();
struct creating_descriptors {
  std::shared_lock<std::shared_mutex> lock{descriptor_creation_mutex()};
};

}  // namespace multiproc::detail::os::posix
