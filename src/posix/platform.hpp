// What the POSIX backend needs beyond portable POSIX, behind one interface: the Linux calls
// in platform_linux.cpp, their portable counterparts in platform_portable.cpp. CMake builds
// exactly one of them. The portable backend files call only these and POSIX itself.
#pragma once

#include <spawn.h>

#include <cstddef>
#include <string>

namespace multiproc::detail::os::posix::platform {

/// A descriptor that becomes readable when process `pid` ends (Linux: pidfd_open), registered
/// and close-on-exec; -1 where there is none (then waits with a timeout poll with backoff).
/// The caller holds the descriptor creation lock.
int open_process_descriptor_locked(long pid) noexcept;

/// A pipe whose two ends are close-on-exec. Linux: atomically (pipe2); elsewhere pipe() then
/// fcntl(), which is safe against the library's own forks and spawns because the caller holds
/// the descriptor creation lock; a fork+exec by other code in between could inherit the pair.
/// False with errno set on failure.
bool make_cloexec_pipe(int fds[2]) noexcept;
/// Asks for a larger pipe buffer (Linux: F_SETPIPE_SZ to 256 KiB); harmless if refused.
void enlarge_pipe(int fd) noexcept;
/// What the pipe buffers while nobody reads (Linux: F_GETPIPE_SZ; elsewhere 16 KiB, the
/// smallest buffer of the POSIX systems we know).
std::size_t pipe_capacity(int fd) noexcept;

/// Adds "close every descriptor from `lowest` on" to a spawn's file actions, so descriptors
/// the program opened without close-on-exec never reach the child (glibc 2.34+:
/// posix_spawn_file_actions_addclosefrom_np). Returns false where there is no such action.
bool add_close_from(posix_spawn_file_actions_t* actions, int lowest) noexcept;
/// Extra posix_spawn flags for the same purpose (macOS: POSIX_SPAWN_CLOEXEC_DEFAULT).
short extra_spawn_flags() noexcept;

/// The path spawn executes to re-run this program (Linux: /proc/self/exe, the kernel's link
/// to the running image: never a PATH lookup, right even if argv[0] is relative).
std::string executable_path();

/// Asks the kernel to kill this process when its parent ends (Linux: PR_SET_PDEATHSIG).
/// Elsewhere nothing: a worker then learns of its parent's end from its channel only.
void kill_me_when_parent_dies() noexcept;

/// The CPUs this process may run on (Linux: sched_getaffinity), or 0 where that is unknown.
unsigned affinity_cpu_count() noexcept;

/// Cryptographically random bytes (Linux: getrandom; elsewhere /dev/urandom). Throws
/// start_error.
void fill_random(void* buffer, std::size_t size);

}  // namespace multiproc::detail::os::posix::platform
