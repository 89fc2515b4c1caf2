// Owned handles on Windows: no fork, so a handle is never inherited behind an object's back
// and the stamp stays 0.
#include "internal.hpp"

namespace multiproc::detail::os {

owned_handle::owned_handle(native_handle value) noexcept : value_(value) {}

void owned_handle::reset() noexcept {
  if (value_ == invalid_handle) return;
  CloseHandle(as_handle(value_));
  value_ = invalid_handle;
}

}  // namespace multiproc::detail::os
