// UTF-8 (the library's API) to and from UTF-16 (the Windows calls).
#include "internal.hpp"

namespace multiproc::detail::os {

bool utf8_to_utf16(std::string_view utf8, std::wstring& utf16) {
  utf16.clear();
  if (utf8.empty()) return true;
  const int length = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8.data(),
                                         static_cast<int>(utf8.size()), nullptr, 0);
  if (length <= 0) return false;
  utf16.resize(static_cast<std::size_t>(length));
  MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8.data(), static_cast<int>(utf8.size()),
                      utf16.data(), length);
  return true;
}

std::string utf16_to_utf8(std::wstring_view utf16) {
  if (utf16.empty()) return {};
  // Unpaired surrogates (possible in Windows names) become U+FFFD rather than failing.
  const int length = WideCharToMultiByte(CP_UTF8, 0, utf16.data(), static_cast<int>(utf16.size()),
                                         nullptr, 0, nullptr, nullptr);
  if (length <= 0) return {};
  std::string utf8(static_cast<std::size_t>(length), '\0');
  WideCharToMultiByte(CP_UTF8, 0, utf16.data(), static_cast<int>(utf16.size()), utf8.data(), length,
                      nullptr, nullptr);
  return utf8;
}

}  // namespace multiproc::detail::os
