// multiproc — the error types. Every error the library throws derives from multiproc::error.
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include <multiproc/config.hpp>

namespace multiproc {

/// Base of every multiproc error; catch it to catch them all.
class MULTIPROC_API error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The target threw in the other process. Carries the exception's type name (demangled, e.g.
/// "std::runtime_error"), its what() text, and the pid of the process it ran in.
class MULTIPROC_API remote_error : public error {
 public:
  /// Builds the error; what() reads "<type>: <message> (in process <pid>)".
  remote_error(std::string type_name, std::string message, long pid)
      : error(type_name + ": " + message + " (in process " + std::to_string(pid) + ")"),
        type_name_(std::move(type_name)),
        message_(std::move(message)),
        pid_(pid) {}
  /// The remote exception's type name, e.g. "std::runtime_error".
  const std::string& remote_type() const noexcept { return type_name_; }
  /// The remote exception's what() (empty if it was not a std::exception).
  const std::string& remote_what() const noexcept { return message_; }
  /// The process the task ran in.
  long pid() const noexcept { return pid_; }

 private:
  std::string type_name_;
  std::string message_;
  long pid_;
};

/// A worker died while it held the task (killed, crashed, or exited). Carries its pid and its
/// exit code in Python's convention (-N for signal N; on Windows a crash reads as its NTSTATUS).
class MULTIPROC_API worker_lost : public error {
 public:
  /// Builds the error; what() reads "worker process <pid> died while running the task (killed
  /// by signal N)" for an exit code -N with 0 < N < 128, else "(exit code <exitcode>)". Throws
  /// only std::bad_alloc.
  worker_lost(long pid, int exitcode)
      : error("worker process " + std::to_string(pid) + " died while running the task (" +
              describe(exitcode) + ")"),
        pid_(pid),
        exitcode_(exitcode) {}
  /// The process id of the worker that died.
  long pid() const noexcept { return pid_; }
  /// Python's exit code of the lost worker: the status, or -N for signal N.
  int exitcode() const noexcept { return exitcode_; }
  /// The signal that killed it, or 0 if it exited.
  int signal() const noexcept { return exitcode_ < 0 && exitcode_ > -128 ? -exitcode_ : 0; }

 private:
  static std::string describe(int code) {
    if (code < 0 && code > -128) return "killed by signal " + std::to_string(-code);
    return "exit code " + std::to_string(code);
  }
  long pid_;
  int exitcode_;
};

/// A wait with a time limit (get(timeout), join(timeout), ...) ran out. The operation can be
/// retried: the result is not lost.
class MULTIPROC_API timeout_error : public error {
 public:
  using error::error;
};

/// The call is not valid in the object's present state: start() twice, join() before start(),
/// submitting to a closed pool, join() on a pool that is still open, a result of a terminated
/// pool, successful() before ready().
class MULTIPROC_API state_error : public error {
 public:
  using error::error;
};

/// A payload could not be encoded or decoded.
class MULTIPROC_API serialization_error : public error {
 public:
  /// Where it failed. encode_message / decode_message: an item of a queue or a message of a
  /// pipe (decode_message also when it was sent as another type than the one asked for).
  enum class phase {
    encode_arguments,
    decode_arguments,
    encode_result,
    decode_result,
    encode_message,
    decode_message
  };
  /// Builds the error; what() reads "serialization failed while <name(where)>: <detail>"
  /// (`detail`: the codec's message, or why a frame was refused). Throws only std::bad_alloc.
  serialization_error(phase where, const std::string& detail)
      : error(std::string("serialization failed while ") + name(where) + ": " + detail),
        phase_(where) {}
  /// The phase that failed: encode_arguments and decode_result in the caller;
  /// decode_arguments and encode_result in a pool worker, reported back to the caller (an
  /// mp::process child reports those on its stderr and exits with 1 instead).
  phase where() const noexcept { return phase_; }

  /// "encoding the arguments", ...
  static const char* name(phase where) noexcept {
    switch (where) {
      case phase::encode_arguments:
        return "encoding the arguments";
      case phase::decode_arguments:
        return "decoding the arguments";
      case phase::encode_result:
        return "encoding the result";
      case phase::decode_result:
        return "decoding the result";
      case phase::encode_message:
        return "encoding a message";
      case phase::decode_message:
        return "decoding a message";
    }
    return "?";
  }

 private:
  phase phase_;
};

/// A process could not be started. code() is the operating system's error (ENOENT, EACCES,
/// EMFILE, ...; a Win32 error code on Windows) or a multiproc protocol failure.
class MULTIPROC_API start_error : public error {
 public:
  /// Builds the error; what() reads "<what>: <code.message()>", or just `what` when `code`
  /// is empty (a failure of multiproc's own, e.g. mp::init missing in a spawned child).
  /// Throws only std::bad_alloc.
  start_error(const std::string& what, std::error_code code)
      : error(what + (code ? ": " + code.message() : std::string())), code_(code) {}
  /// The OS error: an errno in std::generic_category() on POSIX; a Win32 error (an NTSTATUS
  /// for BCryptGenRandom) in std::system_category() on Windows; a std::errc value for a few
  /// portable failures (fork unavailable: function_not_supported); empty (value 0) for
  /// multiproc's own failures (mp::init missing, pool workers that never became ready).
  std::error_code code() const noexcept { return code_; }

 private:
  std::error_code code_;
};

/// The task was cancelled before it started (async_result::cancel(), or
/// pool::close(mp::cancel_pending)): it never ran, and never will. Python's
/// concurrent.futures.CancelledError.
class MULTIPROC_API cancelled_error : public error {
 public:
  using error::error;
};

/// A queue or connection has nothing more to give: the other side is closed (every producer
/// of a queue closed it or ended; every holder of a pipe's other end did) and nothing is left
/// to read -- Python's EOFError. Also any use of a queue or connection after its close().
class MULTIPROC_API closed_error : public error {
 public:
  using error::error;
};

/// A process died (or ended) while it held an mp::mutex, mp::recursive_mutex or the lock of an
/// mp::condition. Thrown once, by the acquire() that notices it (within about 100 ms of the
/// death; on POSIX once the dead process has been reaped, e.g. by join()); that acquire does
/// not hold the lock, which is free again: the next acquire() takes it normally. Whatever the
/// dead holder was changing under the lock may be half-done.
class MULTIPROC_API owner_died_error : public error {
 public:
  using error::error;
};

/// An mp::barrier is broken: abort() was called, a wait timed out, or reset() was called while
/// parties were waiting (Python's BrokenBarrierError).
class MULTIPROC_API broken_barrier_error : public error {
 public:
  using error::error;
};

}  // namespace multiproc
