// multiproc — mp::async_result: the future of a pool task (Python's AsyncResult).
#pragma once

#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <future>
#include <istream>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <multiproc/config.hpp>
#include <multiproc/detail/call.hpp>
#include <multiproc/detail/timeout.hpp>
#include <multiproc/errors.hpp>

namespace multiproc {

namespace detail {
/// The shared state of one submission (one task, or the chunks of a map). Defined in the
/// library; the typed layer reaches it through the functions below.
class result_state;
MULTIPROC_API void state_wait(result_state& state);
MULTIPROC_API bool state_wait_for(result_state& state, std::chrono::nanoseconds timeout);
MULTIPROC_API bool state_ready(const result_state& state) noexcept;
/// Throws mp::state_error if not ready.
MULTIPROC_API bool state_successful(const result_state& state);
/// Rethrows the stored error, if any (the first failed part in input order).
MULTIPROC_API void state_rethrow(const result_state& state);
MULTIPROC_API std::size_t state_parts(const result_state& state) noexcept;
/// Runs `reader` on the bytes of `part`; a decoding failure becomes serialization_error.
MULTIPROC_API void state_decode(const result_state& state, std::size_t part,
                                void (*reader)(std::istream& in, void* out), void* out);
/// Runs `callback` once the state is ready: at once in this thread if it already is,
/// otherwise in the pool's result thread.
MULTIPROC_API void state_then(result_state& state, std::function<void()> callback);
/// Cancels the parts that have not started; true if the state is cancelled (now or before).
MULTIPROC_API bool state_cancel(result_state& state);
MULTIPROC_API bool state_cancelled(const result_state& state);
/// Items of the parts settled so far (a map's chunks hold several), and in all.
MULTIPROC_API std::size_t state_items_done(const result_state& state);
MULTIPROC_API std::size_t state_items_total(const result_state& state) noexcept;

/// How the library's free functions (mp::wait, mp::as_completed, mp::progress) reach the state
/// behind an async_result.
struct result_access {
  template <class Result>
  static const std::shared_ptr<result_state>& state(const Result& result) {
    return result.checked_state();
  }
};

template <class R>
void read_value(std::istream& in, void* out) {
  input_archive archive(in);
  archive(*static_cast<R*>(out));
}
template <class R>
void read_chunk(std::istream& in, void* out) {
  decode_chunk(in, *static_cast<std::vector<R>*>(out));
}
template <class R>
struct value_decoder {
  static R decode(const result_state& state) {
    if constexpr (!std::is_void_v<R>) {
      R value{};
      state_decode(state, 0, &read_value<R>, &value);
      return value;
    }
  }
};
/// map: the parts are chunks whose results are concatenated in order.
template <class R>
struct chunks_decoder {
  static std::vector<R> decode(const result_state& state) {
    std::vector<R> values;
    for (std::size_t part = 0; part < state_parts(state); ++part) {
      state_decode(state, part, &read_chunk<R>, &values);
    }
    return values;
  }
};
}  // namespace detail

/// The result of a task submitted to a pool. Copyable; copies share the state. R may be
/// void. The result stays available after get(): get() may be called again. Every member
/// function throws mp::state_error on a default-constructed result.
template <class R>
class async_result {
 public:
  /// A result with no task behind it, only to be assigned one later: every member function
  /// throws mp::state_error until then. Throws nothing.
  async_result() = default;
  /// Used by mp::pool.
  async_result(std::shared_ptr<detail::result_state> state,
               R (*decode)(const detail::result_state&))
      : state_(std::move(state)), decode_(decode) {}

  /// Waits for the result and returns it, or rethrows the task's error: mp::remote_error
  /// (the target threw), mp::worker_lost (its worker died), mp::serialization_error,
  /// mp::state_error (the pool was terminated, or its initializer failed), mp::start_error
  /// (its workers never became ready, or a payload block could not be shared). Throws
  /// mp::state_error on a default-constructed result.
  R get() const {
    detail::state_wait(state());
    detail::state_rethrow(state());
    return decode_(state());
  }
  /// As get(), waiting at most `timeout`; throws mp::timeout_error when it runs out (the
  /// result is not lost: a later get() still returns it). A timeout of zero or less polls;
  /// one of 100 years or more (e.g. seconds::max()) waits without a deadline, as get().
  template <class Rep, class Period>
  R get(std::chrono::duration<Rep, Period> timeout) const {
    if (!wait_for(timeout))
      throw timeout_error("async_result::get: the result was not ready in time");
    return get();
  }
  /// Waits until the result is ready. Does not rethrow the task's error (get() does); throws
  /// mp::state_error on a default-constructed result.
  void wait() const { detail::state_wait(state()); }
  /// Waits at most `timeout`; true if the result is ready. A timeout of zero or less polls;
  /// one of 100 years or more (e.g. seconds::max()) waits without a deadline, as wait().
  /// Does not rethrow the task's error; throws mp::state_error on a default-constructed
  /// result.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return detail::state_wait_for(state(), detail::saturated_timeout(timeout));
  }
  /// True once the task finished, successfully or not. Throws mp::state_error on a
  /// default-constructed result (as every member does).
  bool ready() const { return detail::state_ready(state()); }
  /// True if it finished without error. Throws mp::state_error if not ready yet.
  bool successful() const { return detail::state_successful(state()); }

  /// Python's Future.cancel(): cancels the task if it has not started, and returns true; it
  /// will not run, and get() throws mp::cancelled_error (then() callbacks get that error, and
  /// the result is ready at once). Returns false if it is running or done (true if it was
  /// cancelled already). "Not started" means still in the pool's queue, or sent to a worker
  /// that has not begun it and can give it back: a worker that holds several tasks claims
  /// each in shared memory before it runs it, and the pool takes back those it has not
  /// claimed; a worker that holds only one (tasks are long or of unknown length, or there is
  /// no shared memory) begins it as soon as it reads it, so that one counts as started. For
  /// a map_async / starmap_async result: cancels every chunk that has not started, and
  /// returns true if it cancelled any (get() then throws the first failed chunk's error in
  /// input order: mp::cancelled_error unless an earlier chunk failed otherwise); the chunks
  /// already running still finish. Same on every platform. Throws mp::state_error on a
  /// default-constructed result.
  bool cancel() const { return detail::state_cancel(state()); }
  /// Python's Future.cancelled(): true if cancel() or pool::close(mp::cancel_pending)
  /// cancelled the task (for a map: one of its chunks). Throws mp::state_error on a
  /// default-constructed result.
  bool cancelled() const { return detail::state_cancelled(state()); }
  /// Items finished so far: for a map_async / starmap_async result, the items of the chunks
  /// that have finished (successfully, with an error, or cancelled); for apply_async, 0 or 1.
  /// items_done() == items_total() exactly when ready(). Throws mp::state_error on a
  /// default-constructed result.
  std::size_t items_done() const { return detail::state_items_done(state()); }
  /// Items in all: the length of a map's input; 1 for apply_async. Throws mp::state_error on
  /// a default-constructed result.
  std::size_t items_total() const { return detail::state_items_total(state()); }

  /// A std::future that gets this result's value or error (its get() throws what get()
  /// throws here), for code written against std::future (std::future<R>::wait_for,
  /// std::when_all-style helpers, ...). Each call makes a new future; it is set in the pool's
  /// result thread (at once if the result is ready). The async_result stays usable. Throws
  /// mp::state_error on a default-constructed result.
  std::future<R> to_future() const {
    auto promise = std::make_shared<std::promise<R>>();
    std::future<R> future = promise->get_future();
    if constexpr (std::is_void_v<R>) {
      then([promise] { promise->set_value(); },
           [promise](std::exception_ptr error) { promise->set_exception(error); });
    } else {
      then([promise](R value) { promise->set_value(std::move(value)); },
           [promise](std::exception_ptr error) { promise->set_exception(error); });
    }
    return future;
  }
  /// Python's callback / error_callback: `on_value(R)` (or `on_value()` for void) runs when
  /// the task succeeds, `on_error(std::exception_ptr)` when it fails. They run once, in the
  /// pool's result thread (or at once in this thread if the result is already ready): keep
  /// them short. They may submit tasks, close, join or drop the pool; waiting without a
  /// deadline (get(), wait(), apply()) for a result of the same pool that is not ready yet
  /// throws mp::state_error there instead of deadlocking, as it would in Python. An
  /// exception a callback throws is
  /// printed to stderr and dropped. Returns *this for chaining. Throws mp::state_error on a
  /// default-constructed result (nothing is registered then).
  template <class OnValue, class OnError = std::nullptr_t>
  const async_result& then(OnValue on_value, OnError on_error = nullptr) const {
    auto self = *this;
    detail::state_then(
        state(), [self, on_value = std::move(on_value), on_error = std::move(on_error)]() mutable {
          std::exception_ptr failure;
          if constexpr (std::is_void_v<R>) {
            try {
              self.get();
            } catch (...) {
              failure = std::current_exception();
            }
            if (!failure) return guarded([&] { on_value(); });
          } else {
            std::optional<R> value;
            try {
              value.emplace(self.get());
            } catch (...) {
              failure = std::current_exception();
            }
            if (!failure) return guarded([&] { on_value(std::move(*value)); });
          }
          if constexpr (!std::is_null_pointer_v<OnError>) {
            guarded([&] { on_error(failure); });
          } else {
            (void)on_error;  // captured either way (clang 19: -Wunused-lambda-capture)
          }
        });
    return *this;
  }

 private:
  template <class Fn>
  static void guarded(Fn&& fn) noexcept {
    try {
      fn();
    } catch (...) {
      std::fputs("multiproc: a result callback threw; its exception was dropped\n", stderr);
    }
  }
  friend struct detail::result_access;
  detail::result_state& state() const { return *checked_state(); }
  const std::shared_ptr<detail::result_state>& checked_state() const {
    if (!state_)
      throw state_error("async_result: no task behind this (default-constructed) result");
    return state_;
  }

  std::shared_ptr<detail::result_state> state_;
  R (*decode_)(const detail::result_state&) = nullptr;
};

}  // namespace multiproc
