// What the POSIX backend needs beyond portable POSIX, behind one interface: the Linux calls
// in platform_linux.cpp, their portable counterparts in platform_portable.cpp. CMake builds
// exactly one of them. The portable backend files call only these and POSIX itself.
#pragma once

#include <spawn.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace multiproc::detail::os::posix::platform {

/// A descriptor that becomes readable when process `pid` ends (Linux: pidfd_open), registered
/// and close-on-exec; -1 where there is none (then waits with a timeout poll with backoff).
/// The caller holds the descriptor creation lock.
int open_process_descriptor_locked(long pid) noexcept;

/// Sends `signal_number` to the process `pidfd` names (Linux: pidfd_send_signal), which can
/// never reach another process that reused its pid. False if it could not be sent (gone, or no
/// such call here).
bool signal_process_descriptor(int pidfd, int signal_number) noexcept;

/// A connected pair of Unix sockets of `type` (SOCK_STREAM, SOCK_SEQPACKET), both
/// close-on-exec: atomically on Linux (SOCK_CLOEXEC), elsewhere under the descriptor creation
/// lock the caller holds. False with errno set on failure.
bool make_cloexec_socketpair(int type, int fds[2]) noexcept;
/// Whatever a new socket of ours needs before use (macOS: SO_NOSIGPIPE).
void prepare_socket(int fd) noexcept;
/// Flags for send/sendmsg so a vanished peer gives EPIPE, not SIGPIPE (Linux: MSG_NOSIGNAL).
int send_no_signal_flag() noexcept;
/// Flags for recvmsg so received descriptors are close-on-exec at once (MSG_CMSG_CLOEXEC).
int receive_cloexec_flag() noexcept;
/// Sets close-on-exec on `fd` (a no-op where receive_cloexec_flag() did it already).
void set_cloexec(int fd) noexcept;

/// Adds "close every descriptor from `lowest` on" to a spawn's file actions, so descriptors
/// the program opened without close-on-exec never reach the child (glibc 2.34+:
/// posix_spawn_file_actions_addclosefrom_np). Returns false where there is no such action.
bool add_close_from(posix_spawn_file_actions_t* actions, int lowest) noexcept;
/// Extra posix_spawn flags for the same purpose (macOS: POSIX_SPAWN_CLOEXEC_DEFAULT).
short extra_spawn_flags() noexcept;

/// The path spawn executes to re-run this program (Linux: /proc/self/exe, the kernel's link
/// to the running image: never a PATH lookup, right even if argv[0] is relative; macOS:
/// _NSGetExecutablePath, resolved). Throws std::bad_alloc only.
std::string executable_path();

/// This process's environment, as `environ` holds it (macOS: *_NSGetEnviron(), since a shared
/// library there cannot link against `environ`).
char** environment() noexcept;

/// Gives this process the command name of `parent` (Linux: /proc/<parent>/comm, PR_SET_NAME);
/// elsewhere nothing (there the name comes from the image's own path).
void take_parent_name(long parent) noexcept;

/// See os::prepare_fresh_memory (src/os/system.hpp): Linux asks for huge pages and faults the
/// range in; the portable build does nothing.
void prepare_fresh_memory(void* data, std::size_t bytes) noexcept;

/// Makes this process end (SIGKILL) when its parent ends. Linux: PR_SET_PDEATHSIG. Portable
/// POSIX (macOS): a detached watcher thread that sees the process re-parented within 200 ms.
void kill_me_when_parent_dies() noexcept;

/// When process `pid` started, in the platform's units (Linux: clock ticks since boot, from
/// /proc/<pid>/stat; macOS: microseconds since the epoch, from proc_pidinfo), or 0 where that
/// cannot be told (the portable build). Only compared for equality.
std::uint64_t process_start_time(long pid) noexcept;

/// The CPUs this process may run on (Linux: sched_getaffinity), or 0 where that is unknown.
unsigned affinity_cpu_count() noexcept;

/// Cryptographically random bytes (Linux: getrandom; elsewhere /dev/urandom). Throws
/// start_error.
void fill_random(void* buffer, std::size_t size);

}  // namespace multiproc::detail::os::posix::platform
