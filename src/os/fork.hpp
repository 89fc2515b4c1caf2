// The backend seam, part 4: fork. POSIX only (MULTIPROC_HAS_FORK); twin: src/posix/fork.cpp.
// Windows has no fork, so there is no src/win32/fork.cpp: core reaches this header only
// through src/core/launcher.cpp and mp::fork().
#pragma once

#include <cstdint>
#include <span>

#include <multiproc/config.hpp>

#include "channel.hpp"
#include "child.hpp"

namespace multiproc::detail::os {

#if MULTIPROC_HAS_FORK
/// Forks, after flushing what can safely be flushed from this thread (every FILE, and the
/// standard C++ streams while they are synced with stdio). The child closes every library
/// descriptor (internal and travelling) but those in `keep` (its channel, and the handles its
/// arguments carry), drops the output it inherited unwritten in stdout, stderr and the
/// standard C++ streams (the parent's to write), ties itself to the parent if `kind` says so,
/// runs `entry(context)` and _exit()s with its return value after flushing its own output.
/// Throws start_error with the OS error.
child fork_child(int (*entry)(void* context), void* context, std::span<const native_handle> keep,
                 child_kind kind);
/// The raw fork of mp::fork(): returns 0 in the child, the pid in the parent. The child closes
/// the library's internal descriptors it inherited and keeps everything else -- travelling
/// handles (queues, pipes, shared state) and buffered output included (see mp::fork()). Throws
/// start_error with the OS error.
long fork_plain();
/// In a forked child: the travelling handle the parent held as `token` (inherit_token()),
/// kept open through the fork clean-up for it.
owned_handle adopt_inherited(std::uint64_t token) noexcept;
/// The token under which a forked child finds `handle` (keep it in fork_child's `keep`).
std::uint64_t inherit_token(native_handle handle) noexcept;
#endif

}  // namespace multiproc::detail::os
