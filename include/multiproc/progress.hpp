// multiproc — mp::progress: a progress bar on stderr for a long imap / imap_unordered, a
// map_async result, or any range (what Python programs get from tqdm). C++17 is enough for
// this header.
#pragma once

#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include <multiproc/async_result.hpp>
#include <multiproc/config.hpp>

namespace multiproc {

/// How mp::progress reports. Designated initialisers in this order:
/// `mp::progress(pool.imap(f, xs), {.description = "squares"})`.
struct progress_options {
  /// Printed before the figures ("squares: 42%|####   | 420/1000 ..."); empty: nothing.
  std::string description{};
  /// How many items to expect, when the range cannot say. Unset: the range's size(), or for
  /// imap / imap_unordered the size of their input when it has one; for a map_async result,
  /// its items_total(). Without any, only the count and rate are shown.
  std::optional<std::size_t> total{};
  /// False: nothing is drawn; nothing else changes (a wrapped range yields the same items,
  /// and progress(result) still waits for the result).
  bool enabled = true;
};

namespace detail {
/// Draws one progress report on stderr (library-defined).
class progress_meter;
MULTIPROC_API std::shared_ptr<progress_meter> start_progress(const progress_options& options,
                                                             std::optional<std::size_t> total);
/// `items` more are done.
MULTIPROC_API void progress_add(progress_meter& meter, std::size_t items);
/// The last report: the figures where they stand, and the end of the line. `reached_end`:
/// the range ran to its end (otherwise it was left early, by break or an exception).
/// Idempotent.
MULTIPROC_API void progress_finish(progress_meter& meter, bool reached_end) noexcept;
/// Reports `state`'s items as its parts settle, until it is ready; then finishes.
MULTIPROC_API void progress_follow(progress_meter& meter, result_state& state);

template <class T>
struct is_async_result : std::false_type {};
template <class R>
struct is_async_result<async_result<R>> : std::true_type {};

template <class Range, class = void>
struct has_size_hint : std::false_type {};
template <class Range>
struct has_size_hint<Range, std::void_t<decltype(std::declval<const Range&>().size_hint())>>
    : std::true_type {};
template <class Range, class = void>
struct has_size : std::false_type {};
template <class Range>
struct has_size<Range, std::void_t<decltype(std::size(std::declval<const Range&>()))>>
    : std::true_type {};

/// How many items `range` holds, when it can tell.
template <class Range>
std::optional<std::size_t> size_of_range(const Range& range) {
  if constexpr (has_size_hint<Range>::value) {
    return range.size_hint();
  } else if constexpr (has_size<Range>::value) {
    return static_cast<std::size_t>(std::size(range));
  } else {
    return std::nullopt;
  }
}
}  // namespace detail

/// What mp::progress returns for a range: the same items, in the same order, counted as the
/// loop goes. Single pass; move-only. Leaving the loop (its end, a break, an exception)
/// writes the last report and ends its line.
template <class Range>
class progress_range {
  using inner_iterator = decltype(std::begin(std::declval<Range&>()));
  using inner_sentinel = decltype(std::end(std::declval<Range&>()));

 public:
  /// The end of a progress_range.
  struct sentinel {};

  /// An input iterator over the wrapped range's items; each increment counts one item done.
  class iterator {
   public:
    /// Iterator traits: an input iterator.
    using iterator_category = std::input_iterator_tag;
    /// The wrapped range's item type.
    using value_type =
        std::remove_cv_t<std::remove_reference_t<decltype(*std::declval<inner_iterator&>())>>;
    /// Iterator traits.
    using difference_type = std::ptrdiff_t;
    /// What the wrapped iterator's * returns.
    using reference = decltype(*std::declval<inner_iterator&>());
    /// Iterator traits.
    using pointer = std::add_pointer_t<reference>;

    /// Only to be assigned one. Throws nothing.
    iterator() = default;
    /// Used by progress_range.
    iterator(inner_iterator it, inner_sentinel end, detail::progress_meter* meter)
        : it_(std::move(it)), end_(std::move(end)), meter_(meter) {}
    /// The wrapped iterator's item; throws what it throws (imap: the task's error).
    reference operator*() const { return *it_; }
    /// Counts the item just used, then moves on; throws what the wrapped ++ throws. The
    /// report is finished as soon as the end is reached.
    iterator& operator++() {
      if (meter_ != nullptr) detail::progress_add(*meter_, 1);
      ++it_;
      if (meter_ != nullptr && it_ == end_) detail::progress_finish(*meter_, true);
      return *this;
    }
    /// As ++it. Throws as ++it.
    void operator++(int) { ++*this; }
    /// At the end of the wrapped range. Throws what the wrapped comparison throws.
    friend bool operator==(const iterator& it, sentinel) { return it.it_ == it.end_; }
    /// At the end of the wrapped range. Throws what the wrapped comparison throws.
    friend bool operator==(sentinel, const iterator& it) { return it.it_ == it.end_; }
    /// Not at the end. Throws what the wrapped comparison throws.
    friend bool operator!=(const iterator& it, sentinel) { return !(it.it_ == it.end_); }
    /// Not at the end. Throws what the wrapped comparison throws.
    friend bool operator!=(sentinel, const iterator& it) { return !(it.it_ == it.end_); }

   private:
    inner_iterator it_{};
    inner_sentinel end_{};
    detail::progress_meter* meter_ = nullptr;
  };

  /// Used by mp::progress: takes the range (an rvalue is moved in, an lvalue referred to) and
  /// writes the first report. Throws std::bad_alloc.
  progress_range(Range&& range, const progress_options& options)
      : range_(std::forward<Range>(range)) {
    std::optional<std::size_t> total = options.total;
    if (!total) total = detail::size_of_range(range_);
    meter_ = detail::start_progress(options, total);
  }
  /// Moves the range and its report (the moved-from one reports nothing more). Throws
  /// nothing.
  progress_range(progress_range&&) noexcept = default;
  progress_range& operator=(progress_range&&) = delete;
  progress_range(const progress_range&) = delete;
  progress_range& operator=(const progress_range&) = delete;
  /// Writes the last report if the loop left early. Throws nothing.
  ~progress_range() {
    if (meter_) detail::progress_finish(*meter_, false);
  }

  /// Begins the wrapped range (imap: waits for the first chunk). Throws what its begin()
  /// throws; the report then ends where it stands.
  iterator begin() {
    auto first = std::begin(range_);
    auto last = std::end(range_);
    if (first == last) detail::progress_finish(*meter_, true);
    return iterator(std::move(first), std::move(last), meter_.get());
  }
  /// The end. Throws nothing.
  sentinel end() const noexcept { return {}; }

 private:
  Range range_;
  std::shared_ptr<detail::progress_meter> meter_;
};

/// Wraps a range -- an imap / imap_unordered range, an mp::as_completed range, any range with
/// begin() and end() -- so that iterating it draws progress on stderr: when stderr is a
/// terminal, a bar redrawn in place at most ten times a second (percentage, items done of
/// the total, elapsed time, estimated time left, items per second); otherwise (a pipe, a file,
/// a CI log) one line at every 10 % (without a total: at 1, 10, 100, ... items, and a last
/// line at the end). An item counts once the loop body is done with it. Leaving the loop early
/// (break, an exception) writes the figures where they stand and ends the line, so what is
/// printed next starts on a line of its own. An rvalue range is moved into the result; an
/// lvalue one must outlive it. Throws std::bad_alloc. Windows: "a terminal" is a console.
template <class Range,
          std::enable_if_t<!detail::is_async_result<std::decay_t<Range>>::value, int> = 0>
progress_range<Range> progress(Range&& range, const progress_options& options = {}) {
  return progress_range<Range>(std::forward<Range>(range), options);
}

/// Waits for a map_async / starmap_async (or apply_async) result, drawing its progress on
/// stderr as its chunks finish (as the range overload draws it; the total is items_total()),
/// and returns it, ready: `auto ys = mp::progress(pool.map_async(f, xs)).get();`. Does not
/// rethrow the result's error (get() does); the report ends cleanly either way. Throws
/// mp::state_error on a default-constructed result, or inside a callback of the pool that
/// settles it (see async_result::then).
template <class R>
async_result<R> progress(const async_result<R>& result, const progress_options& options = {}) {
  detail::result_state& state = *detail::result_access::state(result);
  std::optional<std::size_t> total = options.total;
  if (!total) total = detail::state_items_total(state);
  const auto meter = detail::start_progress(options, total);
  detail::progress_follow(*meter, state);
  return result;
}

}  // namespace multiproc
