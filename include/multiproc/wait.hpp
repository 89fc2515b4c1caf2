// multiproc — waiting on many results at once: mp::wait and mp::as_completed (Python's
// concurrent.futures.wait and as_completed). C++17 is enough for this header.
#pragma once

#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <vector>

#include <multiproc/async_result.hpp>
#include <multiproc/config.hpp>
#include <multiproc/detail/timeout.hpp>

namespace multiproc {

/// When mp::wait returns: Python's FIRST_COMPLETED, FIRST_EXCEPTION and ALL_COMPLETED.
enum class return_when {
  /// As soon as one result is ready (at once if one already is).
  first_completed,
  /// As soon as one result has failed (a cancelled one does not count, as in Python), or when
  /// every result is ready.
  first_exception,
  /// When every result is ready.
  all_completed
};

/// What mp::wait returns: positions in the range it was given (results[i]), each in
/// increasing order. `auto [done, not_done] = mp::wait(results);`
struct wait_result {
  /// The results that were ready when wait returned.
  std::vector<std::size_t> done;
  /// The others.
  std::vector<std::size_t> not_done;
};

namespace detail {
using state_list = std::vector<std::shared_ptr<result_state>>;

/// The states behind `results` (any range of async_result<R>), in order. Throws
/// mp::state_error if one is default-constructed.
template <class Range>
state_list states_of(const Range& results) {
  state_list states;
  for (const auto& result : results)
    states.push_back(result_access::state(result));
  return states;
}

MULTIPROC_API wait_result wait_states(const state_list& states, return_when when,
                                      std::chrono::nanoseconds timeout);

/// Hears the states complete (library-defined).
class completion_queue;
/// Starts watching: the states ready already come first, in order; the others as they
/// complete. The deadline is `timeout` from now (no_deadline_beyond or more: none).
MULTIPROC_API std::shared_ptr<completion_queue> watch_completions(state_list states,
                                                                  std::chrono::nanoseconds timeout);
/// Waits for the next position to complete; throws mp::timeout_error past the deadline.
MULTIPROC_API std::size_t next_completion(completion_queue& queue);

/// The shared state of an as_completed range and its iterators.
class completion_cursor {
 public:
  completion_cursor(state_list states, std::chrono::nanoseconds timeout)
      : total_(states.size()), queue_(watch_completions(std::move(states), timeout)) {}
  std::size_t total() const noexcept { return total_; }
  bool finished() const noexcept { return finished_; }
  std::size_t current() const noexcept { return current_; }
  void start() {
    if (started_) return;
    started_ = true;
    advance();
  }
  void advance() {
    if (yielded_ == total_) {
      finished_ = true;
      return;
    }
    current_ = next_completion(*queue_);
    ++yielded_;
  }

 private:
  std::size_t total_;
  std::shared_ptr<completion_queue> queue_;
  std::size_t yielded_ = 0;
  std::size_t current_ = 0;
  bool started_ = false;
  bool finished_ = false;
};
}  // namespace detail

/// Python's concurrent.futures.wait: waits until `when` holds for `results` (a range of
/// mp::async_result<R>, e.g. a std::vector; they may come from several pools), then returns
/// which are done and which are not, as positions in `results`. An empty range returns at
/// once. It waits on the results themselves (no polling, no thread of its own) and does not
/// rethrow their errors. Throws mp::state_error if a result is default-constructed, or if
/// called without a deadline inside a callback of a pool whose result it would wait for (see
/// async_result::then). Same on every platform.
template <class Range>
wait_result wait(const Range& results, return_when when = return_when::all_completed) {
  return detail::wait_states(detail::states_of(results), when, detail::no_deadline_beyond);
}
/// As wait(results, when), returning when `timeout` runs out even if `when` does not hold yet
/// (not an error: not_done then says what is left, as in Python). A timeout of zero or less
/// only looks; one of 100 years or more waits without a deadline.
template <class Range, class Rep, class Period>
wait_result wait(const Range& results, return_when when,
                 std::chrono::duration<Rep, Period> timeout) {
  return detail::wait_states(detail::states_of(results), when, detail::saturated_timeout(timeout));
}
/// wait() over a braced list: `mp::wait({a, b}, mp::return_when::first_completed)`. Throws as
/// wait() over a range.
template <class R>
wait_result wait(std::initializer_list<async_result<R>> results,
                 return_when when = return_when::all_completed) {
  return detail::wait_states(detail::states_of(results), when, detail::no_deadline_beyond);
}
/// wait() over a braced list with a timeout. Throws as wait() over a range.
template <class R, class Rep, class Period>
wait_result wait(std::initializer_list<async_result<R>> results, return_when when,
                 std::chrono::duration<Rep, Period> timeout) {
  return detail::wait_states(detail::states_of(results), when, detail::saturated_timeout(timeout));
}

/// What mp::as_completed returns: a single-pass range of positions in the results it was
/// given, each once, in the order the results completed (those complete already first, in
/// their order). Iterating blocks until the next one completes.
class completion_range {
 public:
  /// An input iterator over the positions; end() is a default-constructed one.
  class iterator {
   public:
    /// Iterator traits: an input iterator of positions.
    using iterator_category = std::input_iterator_tag;
    /// A position in the results given to as_completed().
    using value_type = std::size_t;
    /// Iterator traits.
    using difference_type = std::ptrdiff_t;
    /// Iterator traits.
    using pointer = const std::size_t*;
    /// Positions are yielded by value.
    using reference = std::size_t;
    /// The end iterator. Throws nothing.
    iterator() = default;
    /// Used by completion_range.
    explicit iterator(std::shared_ptr<detail::completion_cursor> cursor)
        : cursor_(std::move(cursor)) {}
    /// The position of the result that completed. Throws nothing.
    std::size_t operator*() const noexcept { return cursor_->current(); }
    /// Waits for the next result to complete. Throws mp::timeout_error once as_completed's
    /// timeout has run out with results still unfinished.
    iterator& operator++() {
      cursor_->advance();
      return *this;
    }
    /// What it++ returns: the position it held. Throws nothing.
    class postfix {
     public:
      /// The position the iterator held before the increment. Throws nothing.
      std::size_t operator*() const noexcept { return position_; }

     private:
      explicit postfix(std::size_t position) noexcept : position_(position) {}
      std::size_t position_;
      friend class iterator;
    };
    /// As ++it; `*it++` is the position just left. Throws as ++it.
    postfix operator++(int) {
      const postfix before(**this);
      cursor_->advance();
      return before;
    }
    /// Equal when both are at the end (a single-pass range has no other positions to
    /// compare). Throws nothing.
    friend bool operator==(const iterator& a, const iterator& b) noexcept {
      return a.at_end() == b.at_end();
    }
    /// Not equal: one is at the end and the other is not. Throws nothing.
    friend bool operator!=(const iterator& a, const iterator& b) noexcept { return !(a == b); }

   private:
    bool at_end() const noexcept { return cursor_ == nullptr || cursor_->finished(); }
    std::shared_ptr<detail::completion_cursor> cursor_;
  };

  /// Used by mp::as_completed.
  explicit completion_range(std::shared_ptr<detail::completion_cursor> cursor)
      : cursor_(std::move(cursor)) {}
  /// Waits for the first result to complete (single pass: a second call goes on where the
  /// iteration is). Throws mp::timeout_error as operator++ does.
  iterator begin() {
    cursor_->start();
    return iterator(cursor_);
  }
  /// The end. Throws nothing.
  iterator end() const noexcept { return iterator(); }
  /// How many positions it yields in all: the number of results given. Throws nothing.
  std::size_t size() const noexcept { return cursor_->total(); }

 private:
  std::shared_ptr<detail::completion_cursor> cursor_;
};

/// Python's concurrent.futures.as_completed: a range that yields the position of each result
/// in `results` (a range of mp::async_result<R>; they may come from several pools) as it
/// completes, those already complete first. `for (std::size_t i : mp::as_completed(rs))
/// use(rs[i].get());` -- the position also finds the input that produced it. It waits on the
/// results themselves (no polling, no thread of its own); leaving the loop early stops
/// watching. Does not rethrow the results' errors (get() does). Throws mp::state_error if a
/// result is default-constructed, or inside a callback of a pool whose result it would wait
/// for without a deadline (see async_result::then). Same on every platform.
template <class Range>
completion_range as_completed(const Range& results) {
  return completion_range(std::make_shared<detail::completion_cursor>(detail::states_of(results),
                                                                      detail::no_deadline_beyond));
}
/// As as_completed(results), but iterating throws mp::timeout_error once `timeout` (counted
/// from this call, as in Python) has run out with results still unfinished.
template <class Range, class Rep, class Period>
completion_range as_completed(const Range& results, std::chrono::duration<Rep, Period> timeout) {
  return completion_range(std::make_shared<detail::completion_cursor>(
      detail::states_of(results), detail::saturated_timeout(timeout)));
}

}  // namespace multiproc
