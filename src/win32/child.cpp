// Children on Windows: waiting on the process handle, TerminateProcess with marker codes that
// read back as -SIGTERM / -SIGKILL.
#include <algorithm>
#include <system_error>

#include "../os/child.hpp"
#include "internal.hpp"

namespace multiproc::detail::os {

namespace {

// Python reports a process ended by a signal as -N. Windows has no signals, so terminate() and
// kill() pass these exit codes to TerminateProcess and exit_code() maps them back to -SIGTERM
// and -SIGKILL. They are read back that way only when this object did send the request, so a
// program that happens to exit with 65551 by itself still reads as 65551.
constexpr int sigterm_number = 15;
constexpr int sigkill_number = 9;
constexpr UINT signal_exit_base = 0x10000;  // the code Python's own terminate() uses
constexpr UINT terminate_exit_code = signal_exit_base | sigterm_number;
constexpr UINT kill_exit_code = signal_exit_base | sigkill_number;

child_end decode_exit_code(DWORD code, int signal_sent) noexcept {
  if (signal_sent != 0 && (code == terminate_exit_code || code == kill_exit_code)) {
    return {true, static_cast<int>(code - signal_exit_base)};
  }
  // Everything else is the process's own exit code, taken bit for bit. A crash ends a process
  // with its NTSTATUS, which has the top bits set, so it reads as a large negative number
  // (access violation 0xC0000005 reads as -1073741819), never as one of the -N of a signal.
  return {false, static_cast<int>(code)};
}

}  // namespace

bool child::wait(std::optional<std::chrono::nanoseconds> timeout) {
  if (remote_) return remote_->wait(timeout);
  HANDLE process = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (exit_code_) return true;
    if (!handle_) return false;
    process = as_handle(handle_.get());
  }
  // The lock is not held while blocking, so terminate() and kill() stay usable meanwhile. The
  // handle stays valid: only the destructor and moves close it, never concurrently with this.
  DWORD result = WAIT_TIMEOUT;
  if (!timeout) {
    result = WaitForSingleObject(process, INFINITE);
  } else {
    using namespace std::chrono;
    const auto deadline = steady_clock::now() + std::max(*timeout, nanoseconds::zero());
    for (;;) {
      const auto left = deadline - steady_clock::now();
      // Rounded up, so the wait never ends before the timeout; INFINITE itself is excluded.
      const long long ms =
          ceil<milliseconds>(std::max(left, steady_clock::duration::zero())).count();
      const auto slice = static_cast<DWORD>(std::min<long long>(ms, INFINITE - 1));
      result = WaitForSingleObject(process, slice);
      if (result != WAIT_TIMEOUT || steady_clock::now() >= deadline) break;
    }
  }
  if (result == WAIT_TIMEOUT) return false;
  if (result != WAIT_OBJECT_0) {
    throw std::system_error(last_error_code(), "WaitForSingleObject");
  }
  DWORD code = 0;
  if (!GetExitCodeProcess(process, &code)) {
    throw std::system_error(last_error_code(), "GetExitCodeProcess");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (!exit_code_) exit_code_ = python_exit_code(decode_exit_code(code, signal_sent_));
  return true;
}

std::optional<int> child::exit_code() const {
  if (remote_) return remote_->exit_code();
  std::lock_guard<std::mutex> lock(mutex_);
  return exit_code_;
}

void child::terminate() noexcept {
  if (remote_) return remote_->terminate();
  send_signal(sigterm_number);
}

void child::kill() noexcept {
  if (remote_) return remote_->kill();
  send_signal(sigkill_number);
}

void child::send_signal(int signal_number) noexcept {
  // Held across TerminateProcess so that a concurrent wait() decodes the exit code only once
  // signal_sent_ says whether the code came from here.
  std::lock_guard<std::mutex> lock(mutex_);
  if (exit_code_ || !handle_) return;
  const UINT code = signal_number == sigkill_number ? kill_exit_code : terminate_exit_code;
  // Fails harmlessly if the child has already ended (its own exit code then stands).
  if (TerminateProcess(as_handle(handle_.get()), code) && signal_sent_ == 0) {
    signal_sent_ = signal_number;
  }
}

}  // namespace multiproc::detail::os
