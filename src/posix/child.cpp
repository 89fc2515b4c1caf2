// POSIX children: waiting (WNOWAIT, then reaping under the lock) and signals.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "../os/child.hpp"
#include "internal.hpp"
#include "platform.hpp"

namespace multiproc::detail::os {

namespace {
child_end end_from_status(int status) noexcept {
  if (WIFSIGNALED(status)) return {true, WTERMSIG(status)};
  if (WIFEXITED(status)) return {false, WEXITSTATUS(status)};
  return {false, unknown_exit_code};
}

/// Whether `pid` has ended, without reaping it (WNOWAIT): while a child is unreaped its pid
/// cannot be reused, so a terminate() or kill() from another thread can never signal a
/// stranger that inherited the number. `flags` adds WNOHANG for a poll.
bool ended_unreaped(long pid, int flags) noexcept {
  siginfo_t info{};
  for (;;) {
    const int rc = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT | flags);
    if (rc == 0) return info.si_pid != 0;
    if (errno == EINTR) continue;
    return true;  // ECHILD: the program reaped it itself; the reap below records that
  }
}
}  // namespace

bool child::wait(std::optional<std::chrono::nanoseconds> timeout) {
  if (remote_) return remote_->wait(timeout);
  long pid;
  native_handle pidfd;
  native_handle report;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (exit_code_ || pid_ == 0) return true;
    pid = pid_;
    pidfd = handle_.get();
    report = report_.get();
    ++waiters_;
  }
  // The pidfd is closed once the child is reaped, by the last thread to leave wait(): one
  // closed under another thread's poll() could be reused by anything meanwhile.
  struct leave_wait {
    child& self;
    ~leave_wait() {
      std::lock_guard<std::mutex> lock(self.mutex_);
      if (--self.waiters_ == 0 && self.exit_code_) {
        self.handle_.reset();
        self.report_.reset();
      }
    }
  } leave{*this};
  if (report != invalid_handle) return wait_for_report(pidfd, report, timeout);
  bool ended = false;
  if (!timeout) {
    ended = ended_unreaped(pid, 0);
  } else if (timeout->count() <= 0) {
    ended = ended_unreaped(pid, WNOHANG);
    // A timed wait cannot block in waitid (it has no timeout, and a SIGCHLD handler of our own
    // would take the program's): it sleeps on the pidfd, or polls.
  } else if (pidfd >= 0) {
    // The pidfd becomes readable when the child ends: sleep in poll() until then.
    const auto deadline = std::chrono::steady_clock::now() + *timeout;
    for (;;) {
      if (ended_unreaped(pid, WNOHANG)) {
        ended = true;
        break;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() < 0) break;
      pollfd p{static_cast<int>(pidfd), POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left.count()) + 1);
    }
  } else {
    // No pidfd (old kernel, other POSIX systems), and no SIGCHLD handler of ours to wake us
    // (it would take the program's own): poll waitid with a pause growing to 20 ms.
    const auto deadline = std::chrono::steady_clock::now() + *timeout;
    auto pause = std::chrono::microseconds(200);
    for (;;) {
      if (ended_unreaped(pid, WNOHANG)) {
        ended = true;
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
      ::usleep(static_cast<useconds_t>(pause.count()));
      pause = std::min(pause * 2, std::chrono::microseconds(20000));
    }
  }
  if (!ended) return false;
  // Reaped under the lock, so that send_signal(), which checks exit_code_ under the same lock,
  // never signals a pid the kernel may already have handed to another process.
  std::lock_guard<std::mutex> lock(mutex_);
  if (exit_code_) return true;
  int status = 0;
  for (;;) {
    const pid_t rc = ::waitpid(static_cast<pid_t>(pid_), &status, WNOHANG);
    if (rc == static_cast<pid_t>(pid_)) {
      exit_code_ = python_exit_code(end_from_status(status));
      return true;
    }
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) {
      exit_code_ = unknown_exit_code;  // ECHILD: the program's own waitpid(-1) reaped it
      return true;
    }
    return false;  // not yet reapable (should not happen after waitid said it ended)
  }
}

// A fork server's child is not ours to reap: its pidfd says when it has ended, and its status
// comes on the report socket, from the child itself (end_report::exiting, sent as its role
// returns) or from the server once it has reaped it (any end: a signal, exit() from the
// call). The pidfd first, so the common end costs one wake-up; the server's word wins when
// both are there. Both descriptors stay open until the last waiter leaves (see wait()).
bool child::wait_for_report(native_handle pidfd, native_handle report,
                            std::optional<std::chrono::nanoseconds> timeout) {
  const auto deadline =
      timeout ? std::chrono::steady_clock::now() + std::max(*timeout, std::chrono::nanoseconds(0))
              : std::chrono::steady_clock::time_point::max();
  for (;;) {
    native_handle watched;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (exit_code_) return true;
      watched = ended_ ? report : pidfd;
    }
    int wait_ms = -1;
    if (timeout) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      wait_ms = static_cast<int>(std::clamp<long long>(left.count(), 0, 1 << 30));
    }
    pollfd p{static_cast<int>(watched), POLLIN, 0};
    const int rc = ::poll(&p, 1, wait_ms);
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    if (exit_code_) return true;
    ended_ = true;
    std::optional<int> announced;
    for (;;) {
      posix::end_report record{};
      const ssize_t got = ::recv(static_cast<int>(report), &record, sizeof record, MSG_DONTWAIT);
      if (got == static_cast<ssize_t>(sizeof record)) {
        if (record.by_signal == posix::end_report::exiting) {
          announced = record.value & 0xff;
          continue;  // the server's word may be there too
        }
        exit_code_ = python_exit_code({record.by_signal != 0, record.value});
        return true;
      }
      if (announced) {
        exit_code_ = python_exit_code({false, *announced});
        return true;
      }
      if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
      // End of stream (or a torn record) without a word: the server is gone, and the status
      // with it.
      exit_code_ = unknown_exit_code;
      return true;
    }
  }
}

std::optional<int> child::exit_code() const {
  if (remote_) return remote_->exit_code();
  std::lock_guard<std::mutex> lock(mutex_);
  return exit_code_;
}

void child::send_signal(int signal_number) noexcept {
  // Under the lock, and only while unreaped: the pid is still this child's.
  std::lock_guard<std::mutex> lock(mutex_);
  if (pid_ == 0 || exit_code_) return;
  signal_sent_ = signal_number;
  if (report_) {
    // The server may have reaped it already, freeing its pid for anyone: only the pidfd is
    // sure to name this very process (and it fails harmlessly once the process is gone).
    posix::platform::signal_process_descriptor(static_cast<int>(handle_.get()), signal_number);
    return;
  }
  ::kill(static_cast<pid_t>(pid_), signal_number);
}

void child::terminate() noexcept {
  if (remote_) return remote_->terminate();
  send_signal(SIGTERM);
}
void child::kill() noexcept {
  if (remote_) return remote_->kill();
  send_signal(SIGKILL);
}

}  // namespace multiproc::detail::os
