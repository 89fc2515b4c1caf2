// multiproc — facts about the calling process, cpu_count and fork.
#pragma once

#include <multiproc/config.hpp>

namespace multiproc {

/// Facts about the calling process (Python's os.getpid() and os.getppid()).
namespace this_process {
/// The calling process's id (os.getpid()).
MULTIPROC_API long id() noexcept;
/// The id of the calling process's parent (os.getppid()). Throws nothing. POSIX: getppid(),
/// read on every call, so it changes when the parent dies and the process is re-parented (to
/// init or a subreaper). Windows: the id of the process that created this one, as Windows
/// recorded it at creation (read once, then cached); it does not change when that process
/// ends, and by then the id may belong to another process. 0 if Windows does not tell.
MULTIPROC_API long parent_id() noexcept;
}  // namespace this_process

/// The number of CPUs this process may run on (its affinity mask where the platform has
/// one), at least 1. The default size of mp::pool.
MULTIPROC_API unsigned cpu_count() noexcept;

#if MULTIPROC_HAS_FORK
/// os.fork(): returns 0 in the child and the child's id in the parent. Throws
/// mp::start_error (with the OS error) if fork fails. The child is the caller's own copy;
/// it holds no multiproc descriptor (channels of pools and processes are closed in it).
/// Buffered output, as with os.fork: the C streams are flushed just before the fork
/// (fflush(NULL)), but what another thread buffers in the instant between that flush and the
/// fork, and whatever the C++ streams hold after std::ios::sync_with_stdio(false), is in both
/// processes' buffers, and each writes it when it flushes; a child that must not repeat it
/// leaves with _exit() or does not print. (The children mp::process and mp::pool fork
/// themselves drop what they inherited: they never repeat the parent's output.)
/// POSIX only: test MULTIPROC_HAS_FORK.
MULTIPROC_API long fork();
#endif

}  // namespace multiproc
