// Owned handles on Windows: no fork, so a handle is never inherited behind an object's back
// and the stamp stays 0.
#include "internal.hpp"

namespace multiproc::detail::os {

owned_handle::owned_handle(native_handle value, handle_kind) noexcept : value_(value) {}

void owned_handle::reset() noexcept {
  if (value_ == invalid_handle) return;
  CloseHandle(as_handle(value_));
  value_ = invalid_handle;
}

}  // namespace multiproc::detail::os

namespace multiproc::detail::os {

owned_handle duplicate_handle(native_handle handle, handle_kind) {
  HANDLE copy = nullptr;
  if (!DuplicateHandle(GetCurrentProcess(), as_handle(handle), GetCurrentProcess(), &copy, 0, FALSE,
                       DUPLICATE_SAME_ACCESS)) {
    throw std::system_error(last_error_code(), "DuplicateHandle");
  }
  return owned_handle(as_native(copy));
}

}  // namespace multiproc::detail::os
