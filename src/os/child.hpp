// The backend seam, part 3: children this process started, waited for and signalled.
// Twins: src/posix/child.cpp, src/win32/child.cpp; the portable part is src/os/child.cpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include "handle.hpp"

namespace multiproc::detail::os {

/// How a child ended, as the backend saw it, before Python's convention is applied.
struct child_end {
  bool by_signal = false;  ///< ended by signal `value` (Windows: by this object's terminate/kill)
  int value = 0;           ///< the signal number, or the exit status
};
/// Python's exit code: the status, or -N for signal N.
int python_exit_code(child_end end) noexcept;
/// What a child reads as when the program reaped it behind the library's back (its status
/// is lost).
inline constexpr int unknown_exit_code = 255;

/// Which ties a child keeps to its parent's life.
enum class child_kind : std::uint8_t {
  process,      ///< an mp::process: lives on its own, like Python's Process
  pool_worker,  ///< dies with the parent (PR_SET_PDEATHSIG / job object) besides seeing EOF
};

/// A child that is no process of this machine's (a rank of an MPI job serving as a worker,
/// src/mpi/): whoever started it knows how to wait for it and end it, and child forwards to
/// it. Implementations are thread-safe as child is.
class remote_child {
 public:
  virtual ~remote_child() = default;
  /// As child::wait.
  virtual bool wait(std::optional<std::chrono::nanoseconds> timeout) = 0;
  /// As child::exit_code.
  virtual std::optional<int> exit_code() const = 0;
  /// As child::terminate / child::kill: a request to the remote side, which cannot always
  /// interrupt what it is running (src/mpi/ says what it does).
  virtual void terminate() noexcept = 0;
  virtual void kill() noexcept = 0;
};

/// A child process this process started. Thread-safe: one thread may wait while another
/// terminates. The destructor neither waits nor kills: the owner decides. Move operations
/// are not thread-safe against other uses of the same object (as for any std type).
class child {
 public:
  child() = default;
  /// Used by the backends: a started child with its pid and (optionally) a handle to wait on
  /// (the process handle on Windows, a pidfd on Linux).
  child(long pid, native_handle handle) noexcept : pid_(pid), handle_(handle) {}
  /// POSIX: a child the fork server forked for this process (src/posix/forkserver_linux.cpp).
  /// It is the server's child, not this process's, so only the server can reap it: `pidfd`
  /// (required) tells when it has ended and signals it without ever reaching a process that
  /// reused its pid; `report` is the socket on which the child (as its role returns) and the
  /// server (once it has reaped it) tell how it ended.
  child(long pid, native_handle pidfd, native_handle report) noexcept
      : pid_(pid), handle_(pidfd), report_(report) {}
  /// A remote child (see remote_child): `pid` is its process id on its own host, for reports
  /// only (it is never signalled here).
  child(long pid, std::shared_ptr<remote_child> remote) noexcept
      : pid_(pid), remote_(std::move(remote)) {}
  child(child&& other) noexcept;
  child& operator=(child&& other) noexcept;
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child() = default;

  bool valid() const noexcept { return pid_ != 0; }
  long pid() const noexcept { return pid_; }
  /// Waits until the child ended or `timeout` ran out (nullopt: no limit; zero or less:
  /// poll), and reaps it. Returns true once it has ended.
  bool wait(std::optional<std::chrono::nanoseconds> timeout);
  /// Python's exit code: the status, or -N for signal N; nullopt until reaped.
  std::optional<int> exit_code() const;
  /// Asks the child to end (SIGTERM; TerminateProcess on Windows). No-op once reaped.
  void terminate() noexcept;
  /// Ends the child at once (SIGKILL; TerminateProcess on Windows). No-op once reaped.
  void kill() noexcept;
  /// The process handle on Windows, the pidfd on Linux (or invalid_handle).
  native_handle handle() const noexcept { return handle_.get(); }

 private:
  void send_signal(int signal_number) noexcept;
  /// POSIX, a fork server's child: wait() by its pidfd, then the status on its report socket.
  bool wait_for_report(native_handle pidfd, native_handle report,
                       std::optional<std::chrono::nanoseconds> timeout);
  mutable std::mutex mutex_;
  long pid_ = 0;
  owned_handle handle_;
  owned_handle report_;  ///< POSIX, a fork server's child: where it and the server say its end
  /// A fork server's child: its pidfd said it has ended; its status is still to come.
  bool ended_ = false;
  std::optional<int> exit_code_;
  int signal_sent_ = 0;  ///< which request was sent; Windows reads its own codes back by it
  int waiters_ = 0;      ///< POSIX: threads inside wait(), which may be polling the pidfd
  /// A remote child's owner: wait, exit_code, terminate and kill go there. Never changes but
  /// by moves.
  std::shared_ptr<remote_child> remote_;
};

}  // namespace multiproc::detail::os
