// Process stamps on POSIX (see src/os/sync.hpp): the pid and, where the platform tells, the
// start time, so a pid the kernel has handed to a new process is not taken for the old one.
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <system_error>
#include <vector>

#include "../os/child.hpp"
#include "../os/sync.hpp"
#include "descriptors.hpp"
#include "platform.hpp"

namespace multiproc::detail::os {

namespace {
/// This process's stamp, computed once per process: reading the start time costs a file
/// read, and even getpid() a system call, on paths taken per message. A forked child (any
/// fork: the library's, mp::fork(), or the program's own) starts with it cleared.
std::atomic<std::int64_t> cached_pid{0};
std::atomic<std::uint64_t> cached_start{0};
const bool cache_cleared_in_children = [] {
  pthread_atfork(nullptr, nullptr, [] { cached_pid.store(0, std::memory_order_relaxed); });
  return true;
}();
}  // namespace

// The same in both builds (sync_linux.cpp, sync_portable.cpp): the state is theirs, the handle
// is this.
shared_sync shared_sync::adopt(void* memory, std::vector<owned_handle> handles) {
  shared_sync adopted;
  adopted.memory_ = memory;
  adopted.handles_ = std::move(handles);
  adopted.spin_ = std::make_unique<spin_budget>();
  return adopted;
}

process_stamp this_process_stamp() noexcept {
  (void)cache_cleared_in_children;
  std::int64_t pid = cached_pid.load(std::memory_order_acquire);
  if (pid == 0) {
    pid = static_cast<std::int64_t>(::getpid());
    cached_start.store(posix::platform::process_start_time(static_cast<long>(pid)),
                       std::memory_order_relaxed);
    cached_pid.store(pid, std::memory_order_release);
  }
  return {pid, cached_start.load(std::memory_order_relaxed)};
}

void run_in_forked_children(void (*callback)()) noexcept {
  pthread_atfork(nullptr, nullptr, callback);
}

process_stamp stamp_of(const child& started) noexcept {
  return {started.pid(), posix::platform::process_start_time(started.pid())};
}

bool still_running(const process_stamp& stamp) noexcept {
  if (::kill(static_cast<pid_t>(stamp.pid), 0) != 0 && errno == ESRCH) return false;
  // A child of ours that ended but is not reaped yet still answers kill() (and keeps its start
  // time): waitid(WNOWAIT) tells it has ended, leaving it to be reaped by whoever joins it.
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(stamp.pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
      info.si_pid == static_cast<pid_t>(stamp.pid)) {
    return false;
  }
  if (stamp.started == 0) return true;  // no start time here: the pid is all we have
  const std::uint64_t now = posix::platform::process_start_time(static_cast<long>(stamp.pid));
  return now == 0 || now == stamp.started;  // 0: gone between the two checks, or unreadable
}

holder_count make_holder_count() {
  const posix::creating_descriptors guard;
  int fds[2];
  if (!posix::platform::make_cloexec_socketpair(SOCK_STREAM, fds)) {
    throw std::system_error(errno, std::generic_category(), "multiproc: holder count");
  }
  // One direction only: `hold` never writes, `watch` sees end of stream once no `hold` is left.
  ::shutdown(fds[0], SHUT_WR);
  ::shutdown(fds[1], SHUT_RD);
  for (int fd : fds)
    posix::register_descriptor(fd, handle_kind::travelling);
  return {owned_handle(fds[0], handle_kind::travelling),
          owned_handle(fds[1], handle_kind::travelling)};
}

bool holders_gone(native_handle watch) noexcept {
  pollfd p{static_cast<int>(watch), POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLIN)) != 0;
}

}  // namespace multiproc::detail::os
