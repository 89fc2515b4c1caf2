// What a process flushes before it starts a child (src/os/system.hpp): the same on every
// platform, since it touches only the C and C++ standard libraries.
#include <cstdio>
#include <fstream>
#include <iostream>

#include "system.hpp"

namespace multiproc::detail::os {

namespace {
/// A standard C++ stream with a buffer of its own: after std::ios::sync_with_stdio(false)
/// (libstdc++ then gives it a std::filebuf). Synced with stdio, it writes through to its FILE.
template <class Char>
bool buffers_itself(const std::basic_ios<Char>& stream) noexcept {
  return dynamic_cast<std::basic_filebuf<Char>*>(stream.rdbuf()) != nullptr;
}
}  // namespace

void flush_parent_output() noexcept {
  try {
    if (!buffers_itself(std::cout)) std::cout.flush();
    if (!buffers_itself(std::cerr)) std::cerr.flush();
  } catch (...) {
    // A stream set to throw on failure: nothing more to do for it here.
  }
  std::fflush(nullptr);
}

}  // namespace multiproc::detail::os
