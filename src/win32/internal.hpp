// win32 backend internals shared by its files: the Windows header, handle conversions, text.
#pragma once

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include "../os/handle.hpp"

#include <string>
#include <string_view>
#include <system_error>

namespace multiproc::detail::os {

inline HANDLE as_handle(native_handle h) noexcept {
  return reinterpret_cast<HANDLE>(h);
}
inline native_handle as_native(HANDLE h) noexcept {
  return reinterpret_cast<native_handle>(h);
}

/// The calling thread's last Win32 error as an error code.
inline std::error_code last_error_code() noexcept {
  return {static_cast<int>(GetLastError()), std::system_category()};
}

/// Converts UTF-8 to UTF-16 into `utf16`; false (and `utf16` empty) if `utf8` is not valid
/// UTF-8. Throws std::bad_alloc only.
bool utf8_to_utf16(std::string_view utf8, std::wstring& utf16);
/// Converts UTF-16 to UTF-8; unpaired surrogates become U+FFFD. Throws std::bad_alloc only.
std::string utf16_to_utf8(std::wstring_view utf16);

}  // namespace multiproc::detail::os
