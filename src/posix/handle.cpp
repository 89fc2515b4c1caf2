// Owned handles on POSIX: descriptors from the library's registry, stamped with the kind and
// epoch they were opened in so that a copy made before a fork clean-up never closes a reused
// number.
#include "../os/handle.hpp"

#include <fcntl.h>

#include <cerrno>
#include <system_error>

#include "descriptors.hpp"

namespace multiproc::detail::os {

owned_handle::owned_handle(native_handle value, handle_kind kind) noexcept
    : value_(value), stamp_(posix::stamp_of(kind)) {}

void owned_handle::reset() noexcept {
  if (value_ < 0) return;
  posix::close_registered(static_cast<int>(value_), stamp_);
  value_ = invalid_handle;
}

owned_handle duplicate_handle(native_handle handle, handle_kind kind) {
  const posix::creating_descriptors guard;
  const int copy = ::fcntl(static_cast<int>(handle), F_DUPFD_CLOEXEC, 3);
  if (copy < 0) throw std::system_error(errno, std::generic_category(), "multiproc: dup");
  posix::register_descriptor(copy, kind);
  return owned_handle(copy, kind);
}

}  // namespace multiproc::detail::os
