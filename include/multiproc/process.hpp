// multiproc — mp::process: run one function in another process (Python's Process).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <multiproc/config.hpp>
#include <multiproc/detail/call.hpp>
#include <multiproc/detail/timeout.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/init.hpp>

namespace multiproc {

namespace detail {
struct process_impl;
/// Deletes out of line, so the user's code never needs process_impl's definition.
struct process_impl_deleter {
  MULTIPROC_API void operator()(process_impl* impl) const noexcept;
};
using process_handle = std::unique_ptr<process_impl, process_impl_deleter>;
MULTIPROC_API process_handle make_process(start_method method, const call_spec& call);
}  // namespace detail

/// A function running in another process. Move-only. The target is a plain function or a
/// captureless lambda; the arguments are copied into the child by serialisation on every
/// start method (fork included), so what works on fork works on spawn. The target's return
/// value is discarded, as in Python, so it need not be serialisable. Every member function throws
/// mp::state_error on a moved-from object; only destruction and assigning a new process to it
/// remain valid.
class MULTIPROC_API process {
 public:
  /// Binds `target(args...)` with the default start method; nothing runs until start().
  /// Throws mp::serialization_error if an argument cannot be encoded. Capturing lambdas,
  /// stateful function objects and non-serialisable arguments do not compile.
  template <class F, class... Args>
  explicit process(F&& target, Args&&... args)
      : process(default_start_method(), std::forward<F>(target), std::forward<Args>(args)...) {}

  /// As above, with the start method chosen for this object (Python's get_context()).
  /// Throws mp::start_error if `method` is not available on this platform.
  template <class F, class... Args>
  process(start_method method, F&& target, Args&&... args) {
    static_assert(detail::check_call<F, Args...>());
    detail::bound_call<F, Args...> call(std::forward<F>(target), std::forward<Args>(args)...);
    impl_ = detail::make_process(method, call.spec());
  }

  /// Takes over `other`'s child (started or not); `other` is left moved-from. Throws nothing.
  process(process&& other) noexcept;
  /// Takes over `other`'s child, then disposes of the one this object held as the destructor
  /// does: if it was started and its end is not yet recorded, a daemon is terminated (killed
  /// after 2 s) and reaped, and any other child is waited for, so this call blocks until that
  /// child ends. A child never started, or held by a forked copy, is left alone.
  /// Self-assignment does nothing. Throws nothing.
  process& operator=(process&& other) noexcept;
  process(const process&) = delete;
  process& operator=(const process&) = delete;
  /// A child still running is joined, or, if it is a daemon, terminated (killed after 2 s if
  /// still alive) and reaped; no zombie is ever left behind. In a forked copy of the object
  /// (after mp::fork()) it does nothing: the child belongs to the process that started it.
  ~process();

  /// Starts the child. Throws mp::state_error if already started, mp::start_error if the
  /// OS refuses (with its error code), or, in a spawned child that was never diverted by
  /// mp::init, mp::start_error naming mp::init.
  void start();
  /// Waits until the child ends. Throws mp::state_error before start().
  void join();
  /// Waits at most `timeout`; true once the child has ended. A timeout of zero or less polls;
  /// one of 100 years or more (e.g. seconds::max()) waits without a deadline, as join().
  /// Throws mp::state_error before start().
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return join_for(detail::saturated_timeout(timeout));
  }
  /// True between start() and the child's end (polls, reaping an ended child).
  bool is_alive() const;
  /// Asks the child to end: SIGTERM on POSIX; TerminateProcess on Windows, where exitcode()
  /// then reads -SIGTERM as in Python. No-op once it ended. Throws mp::state_error before
  /// start(). POSIX: every child starts with no signal blocked (a forked one too, whatever the
  /// starting thread had blocked), so only the target's own handler or mask can refuse it.
  void terminate();
  /// Ends the child at once: SIGKILL on POSIX; TerminateProcess on Windows (exitcode()
  /// reads -SIGKILL). No-op once it ended. Throws mp::state_error before start().
  void kill();
  /// nullopt before start() and while the child runs (it polls, as Python's does); then 0 on
  /// success, 1 for an uncaught exception (printed as "<type>: <what>" on the child's stderr)
  /// or arguments the child could not decode, the status passed to exit(), or -N if signal N
  /// ended it. POSIX: 255 if the child's status was lost: the program's own waitpid(-1, ...)
  /// reaped it, or SIGCHLD is set to SIG_IGN (the system then keeps no status; not so on
  /// forkserver, whose server reaps), or, on forkserver, the server was killed and the child
  /// then ended by a signal or exit() (a call that returns still reads 0 or 1). Windows: -15 / -9
  /// after this object's terminate() / kill(); otherwise the exit code bit for bit, so abort()
  /// reads 3 and a crash its NTSTATUS as a negative int (0xC0000005 reads -1073741819).
  std::optional<int> exitcode() const;
  /// The child's process id; nullopt before start().
  std::optional<long> pid() const;
  /// The name, "process-1", "process-2", ... unless set.
  const std::string& name() const;
  /// Replaces the name name() returns. The name stays in this object: the child never sees it.
  void set_name(std::string name);
  /// A daemon child is terminated (not joined) when its process object is destroyed.
  bool daemon() const;
  /// Throws mp::state_error after start(), as Python does.
  void set_daemon(bool daemon);
  /// The start method: before start(), the one this object was made with (automatic
  /// included); from start() on, the one the child was started with -- what automatic chose
  /// (fork or forkserver; spawn on Windows). Throws mp::state_error on a moved-from object.
  start_method method() const;

 private:
  bool join_for(std::chrono::nanoseconds timeout);
  detail::process_handle impl_;
};

}  // namespace multiproc
