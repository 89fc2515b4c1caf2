// The shared state behind an async_result: one part per task (a map has one per chunk), each
// settled once with its result or error; waiters and then() callbacks are released when the
// last part settles. include/multiproc/async_result.hpp reaches it through the state_*
// functions defined in result_state.cpp.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <vector>

#include <multiproc/async_result.hpp>

#include "../protocol/result.hpp"

namespace multiproc::detail {

class result_state {
 public:
  /// `owner`: the pool whose supervisors settle this state (compared, never dereferenced).
  explicit result_state(std::size_t parts, const void* owner = nullptr)
      : owner_(owner), parts_(parts), remaining_(parts) {}

  const void* owner() const noexcept { return owner_; }

  /// Encoded bytes of this state's parts still queued in the pool (not yet with a worker).
  /// Guarded by the owning pool's mutex, not by this state's.
  std::size_t waiting_bytes = 0;

  /// Records the outcome of part `index` (once: a second outcome is ignored); returns the
  /// callbacks to run if that completed the state. Run them outside every lock.
  std::vector<std::function<void()>> settle(std::size_t index, result_payload result);

  void wait();
  bool wait_for(std::chrono::nanoseconds timeout);
  bool ready() const;
  /// The first failed part's error, in part order (nullptr if none failed).
  std::exception_ptr first_error() const;
  std::size_t parts() const noexcept { return parts_.size(); }
  /// Valid once ready: parts never change after settling.
  const result_payload& at(std::size_t index) const { return parts_[index].result; }
  /// Runs `callback` once the state is ready: at once, in this thread, if it already is.
  void then(std::function<void()> callback);

 private:
  struct part {
    result_payload result;
    bool settled = false;
  };
  const void* const owner_;
  mutable std::mutex mutex_;
  std::condition_variable done_;
  std::vector<part> parts_;
  std::size_t remaining_;
  std::vector<std::function<void()>> callbacks_;
};

/// Marks the calling thread as a supervisor of `pool` (nullptr: of none) for its lifetime:
/// user code runs on such a thread only inside result callbacks.
void set_supervised_pool(const void* pool) noexcept;
/// The pool whose supervisor the calling thread is, or nullptr.
const void* supervised_pool() noexcept;

/// Threads blocked waiting for a result, in any pool: while there are some, a supervisor
/// whose worker is about to answer a short task watches for the answer instead of sleeping.
int blocked_waiters() noexcept;

}  // namespace multiproc::detail
