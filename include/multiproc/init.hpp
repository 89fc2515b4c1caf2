// multiproc — start-up: mp::init, start methods.
#pragma once

#include <string>

#include <multiproc/config.hpp>

namespace multiproc {

/// How a child process starts.
enum class start_method {
  /// fork(): the child is a copy of the parent and runs the target directly. POSIX only.
  fork,
  /// Re-execute this program's own image; the child is diverted by mp::init into the target.
  /// Works everywhere; the only method on Windows.
  spawn,
};

/// The `if __name__ == "__main__"` guard: call it as the first line of main(). In a child
/// started by `spawn` it runs the child's work and ends the process (it never returns there);
/// everywhere else it returns at once. A program started with the spawn marker set but
/// without a valid channel from its parent prints why and exits with code 86 (never runs
/// main: no fork bomb). Throws nothing.
MULTIPROC_API void init(int argc, char** argv);

/// The start method chosen at build time (CMake MULTIPROC_BACKEND: fork or spawn); spawn on
/// Windows.
MULTIPROC_API start_method default_start_method() noexcept;

/// Whether `method` can be used on this platform (fork: POSIX only).
MULTIPROC_API bool start_method_available(start_method method) noexcept;

/// Sets the program spawned children run, like Python's set_executable; empty restores the
/// default (this program's own image: /proc/self/exe on Linux, GetModuleFileNameW on
/// Windows). The program must be this same program: the start-up handshake checks it. Takes
/// effect for children started afterwards; the path is not checked here. Throws
/// mp::start_error on Windows if `utf8_path` is not valid UTF-8 (the previous setting then
/// stays); throws nothing else but std::bad_alloc.
MULTIPROC_API void set_executable(const std::string& utf8_path);

}  // namespace multiproc
