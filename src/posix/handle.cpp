// Owned handles on POSIX: descriptors from the library's registry, stamped with the epoch they
// were opened in so that a copy made before a fork clean-up never closes a reused number.
#include "../os/handle.hpp"

#include "descriptors.hpp"

namespace multiproc::detail::os {

owned_handle::owned_handle(native_handle value) noexcept : value_(value), stamp_(posix::epoch()) {}

void owned_handle::reset() noexcept {
  if (value_ < 0) return;
  posix::close_registered(static_cast<int>(value_), stamp_);
  value_ = invalid_handle;
}

}  // namespace multiproc::detail::os
