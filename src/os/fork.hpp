// The backend seam, part 4: fork. POSIX only (MULTIPROC_HAS_FORK); twin: src/posix/fork.cpp.
// Windows has no fork, so there is no src/win32/fork.cpp: core reaches this header only
// through src/core/launcher.cpp and mp::fork().
#pragma once

#include <multiproc/config.hpp>

#include "channel.hpp"
#include "child.hpp"

namespace multiproc::detail::os {

#if MULTIPROC_HAS_FORK
/// Forks, after flushing the C streams. The child closes every library descriptor but `keep`,
/// drops the output it inherited unwritten in stdout, stderr and the standard C++ streams
/// (the parent's to write), ties itself to the parent if `kind` says so, runs
/// `entry(context)` and _exit()s with its return value after flushing its own output. Throws
/// start_error with the OS error.
child fork_child(int (*entry)(void* context), void* context, const channel* keep, child_kind kind);
/// The raw fork of mp::fork(): returns 0 in the child, the pid in the parent. The child closes
/// the library's descriptors it inherited and keeps everything else, buffered output included
/// (see mp::fork()). Throws start_error with the OS error.
long fork_plain();
#endif

}  // namespace multiproc::detail::os
