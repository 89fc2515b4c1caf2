// The backend seam, part 4: fork. POSIX only (MULTIPROC_HAS_FORK); twin: src/posix/fork.cpp.
// Windows has no fork, so there is no src/win32/fork.cpp: core reaches this header only
// through src/core/launcher.cpp and mp::fork().
#pragma once

#include <multiproc/config.hpp>

#include "channel.hpp"
#include "child.hpp"

namespace multiproc::detail::os {

#if MULTIPROC_HAS_FORK
/// Forks. The child drops the stdio bytes it inherited unflushed (they are the parent's to
/// write), closes every library descriptor but `keep`, ties itself to the parent if `kind`
/// says so, runs `entry(context)` and _exit()s with its return value after flushing its own
/// output. Throws start_error with the OS error.
child fork_child(int (*entry)(void* context), void* context, const channel* keep, child_kind kind);
/// The raw fork of mp::fork(): returns 0 in the child, the pid in the parent. The child closes
/// the library's descriptors it inherited; stdio is flushed before the fork, as os.fork does
/// nothing of the kind. Throws start_error with the OS error.
long fork_plain();
#endif

}  // namespace multiproc::detail::os
