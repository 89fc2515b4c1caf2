// win32 backend internals shared by its files: the Windows header, handle conversions.
#pragma once

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include "../backend.hpp"

namespace multiproc::detail::os {

inline HANDLE as_handle(native_handle h) noexcept {
  return reinterpret_cast<HANDLE>(h);
}
inline native_handle as_native(HANDLE h) noexcept {
  return reinterpret_cast<native_handle>(h);
}

}  // namespace multiproc::detail::os
