// multiproc — mp::pool: a pool of worker processes (Python's multiprocessing.Pool).
#pragma once

#include <algorithm>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <utility>
#include <vector>

#include <multiproc/async_result.hpp>
#include <multiproc/config.hpp>
#include <multiproc/detail/call.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/init.hpp>

namespace multiproc {

namespace detail {
class pool_impl;
}  // namespace detail

/// The type of mp::cancel_pending.
struct cancel_pending_t {
  explicit constexpr cancel_pending_t() = default;
};
/// Asks pool::close() to cancel what has not started: `pool.close(mp::cancel_pending)`, as
/// Python's `executor.shutdown(cancel_futures=True)`.
inline constexpr cancel_pending_t cancel_pending{};

/// A function and its arguments, bound now and run later in another process (a pool's
/// initializer). The same rules as for mp::process apply: a plain function or captureless
/// lambda, serialisable arguments.
class call {
 public:
  /// An empty call: nothing bound, operator bool is false; as pool_options::initializer it
  /// means no initializer. Throws nothing.
  call() = default;
  /// Binds target(args...). Throws mp::serialization_error if an argument cannot be encoded.
  template <class F, class... Args>
  explicit call(F&& target, Args&&... args) {
    static_assert(detail::check_call<F, Args...>());
    detail::bound_call<F, Args...> bound(std::forward<F>(target), std::forward<Args>(args)...);
    encoded_ = detail::encode_call(bound.spec());
  }
  /// True if a function is bound.
  explicit operator bool() const noexcept { return encoded_ != nullptr; }
  /// The encoded call (library use).
  const std::shared_ptr<const detail::encoded_call>& encoded() const noexcept { return encoded_; }

 private:
  std::shared_ptr<const detail::encoded_call> encoded_;
};

/// The most workers a pool may have. A larger count is almost always a negative number
/// converted to unsigned (`mp::pool(-1)` asks for 4 294 967 295): refused, not attempted.
inline constexpr unsigned max_pool_processes = 1024;

/// How a pool is built. Designated initialisers in this order:
/// `mp::pool_options{.processes = 4, .initializer = mp::call(setup, 1), .maxtasksperchild = 100}`.
struct pool_options {
  /// Worker processes; 0 means mp::cpu_count(); at most mp::max_pool_processes.
  unsigned processes = 0;
  /// Runs once in each worker before its first task. If it throws, the pool is broken: every
  /// pending and later result fails with mp::state_error naming the initializer's error, and
  /// no worker is restarted (no respawn storm).
  call initializer{};
  /// A worker exits and is replaced after this many tasks (map chunks count as one); 0: never.
  std::size_t maxtasksperchild = 0;
  /// The start method; unset means mp::default_start_method().
  std::optional<start_method> method{};
};

namespace detail {
/// Submits calls as the parts of one state, in order (one task: one part; a map: its chunks);
/// `count` may be 0 (then it only checks that the pool still takes work).
MULTIPROC_API std::shared_ptr<result_state> pool_submit_parts(pool_impl& pool,
                                                              const call_spec* calls,
                                                              std::size_t count);
/// As pool_submit_parts, for a caller that waits for the result anyway (map, starmap): past
/// 64 MiB of encoded parts waiting for a worker, the rest is encoded as workers take parts.
MULTIPROC_API std::shared_ptr<result_state> pool_submit_parts_paced(pool_impl& pool,
                                                                    const call_spec* calls,
                                                                    std::size_t count);
/// As pool_submit_parts (paced: as pool_submit_parts_paced) for a map's chunks of
/// `chunksize` items, `items` in all: the state counts them (async_result::items_done()).
MULTIPROC_API std::shared_ptr<result_state> pool_submit_chunks(pool_impl& pool,
                                                               const call_spec* calls,
                                                               std::size_t count, bool paced,
                                                               std::size_t items,
                                                               std::size_t chunksize);
MULTIPROC_API std::size_t pool_workers(const pool_impl& pool) noexcept;

template <class F>
using pointer_of = decltype(to_function_pointer(std::declval<F>()));
template <class F>
using result_of = typename signature_of_pointer<pointer_of<F>>::result;

template <class F, bool Star>
using item_of = typename chunk_invoker<pointer_of<F>, Star>::item;

template <class F, bool Star>
constexpr bool check_map_target() {
  using P = typename target_pointer<std::decay_t<F>>::type;
  if constexpr (!std::is_void_v<P>) {
    using sig = signature_of_pointer<P>;
    if constexpr (!Star) {
      static_assert(sig::arity == 1,
                    "multiproc: map/imap call the target with one item each; use starmap for "
                    "targets of several arguments.");
    }
    static_assert(!std::is_void_v<typename sig::result>,
                  "multiproc: map/imap/starmap collect results; the target returns void. Use "
                  "apply_async for calls without a result.");
    check_result<typename sig::result>();
    static_assert(!sig::has_mutable_reference,
                  "multiproc: the target takes a non-const reference; take it by value or by "
                  "const reference.");
  }
  return true;
}

/// A range whose items are already laid out in memory as Items (map chunks it in place).
template <class Range, class Item>
concept contiguous_range_of =
    std::ranges::contiguous_range<const Range> && std::ranges::sized_range<const Range> &&
    std::same_as<std::ranges::range_value_t<const Range>, Item> && !std::same_as<Item, bool>;

/// Python's default chunksize: ceil(len / (4 * workers)).
inline std::size_t default_chunksize(std::size_t items, std::size_t workers) {
  if (items == 0) return 1;
  const std::size_t divisor = 4 * (workers == 0 ? 1 : workers);
  return (items + divisor - 1) / divisor;
}

/// The engine behind imap / imap_unordered: submits chunks as results are consumed. Shared
/// by the range and its iterators, so neither can outlive it.
template <class R, class Item>
class lazy_engine {
 public:
  using pull_fn = std::function<std::size_t(std::vector<Item>&, std::size_t)>;

 private:
  struct chunk {
    std::shared_ptr<result_state> state;
    std::size_t count;
  };
  struct completions {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<std::size_t> done;  // chunk numbers, in completion order
  };

 public:
  lazy_engine(std::shared_ptr<pool_impl> pool, call_spec base, pull_fn pull, std::size_t chunksize,
              bool ordered)
      : pool_(std::move(pool)),
        base_(base),
        pull_(std::move(pull)),
        chunksize_(chunksize == 0 ? 1 : chunksize),
        ordered_(ordered),
        window_(2 * pool_workers(*pool_) + 2),
        completions_(std::make_shared<completions>()) {
    (void)pool_submit_parts(*pool_, nullptr, 0);  // throws if the pool takes no more work
    refill();
  }

  /// A single-pass input iterator; dereferencing an item whose task failed rethrows that
  /// task's error, and incrementing past it goes on with the next item. Incrementing may
  /// pull and submit more items, and then throws as begin() does.
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    using pointer = const R*;
    using reference = const R&;
    iterator() = default;
    explicit iterator(std::shared_ptr<lazy_engine> owner) : owner_(std::move(owner)) {}
    const R& operator*() const { return owner_->current(); }
    const R* operator->() const { return &owner_->current(); }
    iterator& operator++() {
      owner_->advance();
      return *this;
    }
    void operator++(int) { owner_->advance(); }
    friend bool operator==(const iterator& it, std::default_sentinel_t) {
      return it.owner_ == nullptr || it.owner_->finished();
    }

   private:
    std::shared_ptr<lazy_engine> owner_;
  };

  /// Starts iterating (single pass): waits for the first chunk, then pulls and submits the
  /// next one, if any. Throws what that pull and submit throw: the input range's own
  /// exceptions, mp::serialization_error if an item cannot be encoded, mp::state_error if the
  /// pool was closed or terminated meanwhile, a broken pool's error. A task's error is not
  /// thrown here.
  iterator begin(const std::shared_ptr<lazy_engine>& self) {
    if (!started_) {
      started_ = true;
      advance();
    }
    return iterator(self);
  }

  // Used by the iterator.
  bool finished() const { return done_; }
  const R& current() const {
    if (current_error_) std::rethrow_exception(current_error_);
    return *current_;
  }

 private:
  void refill() {
    while (!input_done_ && in_flight_.size() < window_) {
      buffer_.clear();
      const std::size_t got = pull_(buffer_, chunksize_);
      if (got == 0) {
        input_done_ = true;
        break;
      }
      chunk_view<Item> view{buffer_.data(), buffer_.size()};
      call_spec spec = base_;
      spec.arguments = &view;
      chunk c{pool_submit_parts(*pool_, &spec, 1), got};
      const std::size_t number = submitted_++;
      if (!ordered_) {
        state_then(*c.state, [q = completions_, number] {
          std::lock_guard<std::mutex> lock(q->mutex);
          q->done.push_back(number);
          q->ready.notify_all();
        });
      }
      in_flight_.emplace(number, std::move(c));
      if (got < chunksize_) {
        input_done_ = true;
        break;
      }
    }
  }

  void advance() {
    while (true) {
      if (position_ < values_.size() || position_ < pending_errors_) {
        load_item();
        return;
      }
      if (in_flight_.empty()) {
        done_ = true;
        return;
      }
      take_next_chunk();
      refill();
    }
  }

  void load_item() {
    if (chunk_error_) {
      current_error_ = chunk_error_;
      current_.reset();
    } else {
      current_error_ = nullptr;
      current_ = std::move(values_[position_]);
    }
    ++position_;
  }

  void take_next_chunk() {
    std::size_t number;
    if (ordered_) {
      number = next_ordered_++;
    } else {
      std::unique_lock<std::mutex> lock(completions_->mutex);
      completions_->ready.wait(lock, [&] { return !completions_->done.empty(); });
      number = completions_->done.front();
      completions_->done.pop_front();
    }
    auto node = in_flight_.extract(number);
    chunk c = std::move(node.mapped());
    state_wait(*c.state);
    values_.clear();
    position_ = 0;
    pending_errors_ = 0;
    chunk_error_ = nullptr;
    try {
      state_rethrow(*c.state);
      state_decode(*c.state, 0, &read_chunk<R>, &values_);
    } catch (...) {
      chunk_error_ = std::current_exception();
      values_.clear();
      pending_errors_ = c.count;
    }
  }

  std::shared_ptr<pool_impl> pool_;
  call_spec base_;
  pull_fn pull_;
  std::size_t chunksize_;
  bool ordered_;
  std::size_t window_;
  std::shared_ptr<completions> completions_;
  std::vector<Item> buffer_;
  std::map<std::size_t, chunk> in_flight_;
  std::size_t submitted_ = 0;
  std::size_t next_ordered_ = 0;
  bool input_done_ = false;
  bool started_ = false;
  bool done_ = false;
  std::vector<R> values_;
  std::size_t position_ = 0;
  std::size_t pending_errors_ = 0;
  std::exception_ptr chunk_error_;
  std::optional<R> current_;
  std::exception_ptr current_error_;
};

/// The lazy results of imap / imap_unordered: a single-pass range for range-for.
template <class R, class Item>
class lazy_results {
 public:
  using iterator = typename lazy_engine<R, Item>::iterator;
  /// Pulls the first 2 * workers + 2 chunks from the input and submits them, so it throws
  /// what begin() may throw (see pool::imap).
  lazy_results(std::shared_ptr<pool_impl> pool, call_spec base,
               typename lazy_engine<R, Item>::pull_fn pull, std::size_t chunksize, bool ordered,
               std::optional<std::size_t> size_hint = std::nullopt)
      : engine_(std::make_shared<lazy_engine<R, Item>>(std::move(pool), base, std::move(pull),
                                                       chunksize, ordered)),
        size_hint_(size_hint) {}
  /// Starts iterating; the iterator keeps the results alive. Waits for the first chunk and
  /// pulls the next: throws as lazy_engine::begin() (the input range's exceptions,
  /// mp::serialization_error, mp::state_error once the pool was closed or terminated).
  iterator begin() { return engine_->begin(engine_); }
  /// The end: an iterator compares equal to it once every item has been yielded (a
  /// default-constructed iterator always does). Throws nothing.
  std::default_sentinel_t end() const noexcept { return {}; }
  /// How many items the input holds, when it is a sized range (mp::progress shows it as the
  /// total); nullopt otherwise. Throws nothing.
  std::optional<std::size_t> size_hint() const noexcept { return size_hint_; }

 private:
  std::shared_ptr<lazy_engine<R, Item>> engine_;
  std::optional<std::size_t> size_hint_;
};
}  // namespace detail

/// A pool of worker processes. Tasks are plain functions or captureless lambdas with
/// serialisable arguments and results. Differences from Python's Pool, on purpose: a worker
/// that dies fails only the task it was running (mp::worker_lost) and is replaced, and work
/// queued behind it runs elsewhere (Python hangs); terminate() fails every pending result
/// with mp::state_error; the destructor finishes submitted work unless terminate() was called.
/// Every member function throws mp::state_error on a moved-from pool; only destruction and
/// assigning a new pool to it remain valid.
class MULTIPROC_API pool {
 public:
  /// Starts mp::cpu_count() workers with the default start method.
  pool() : pool(pool_options{}) {}
  /// Starts `processes` workers. Throws std::invalid_argument if it is 0 or more than
  /// mp::max_pool_processes (naming the value), mp::start_error if no worker can be started.
  explicit pool(unsigned processes);
  /// Starts a pool as `options` say. Throws std::invalid_argument (more than
  /// mp::max_pool_processes workers), mp::start_error.
  explicit pool(const pool_options& options);
  /// Takes over the other pool's workers and tasks; the other is left moved-from. Throws
  /// nothing.
  pool(pool&&) noexcept;
  /// Takes over the other pool, then disposes of the pool this object held as ~pool() does:
  /// close() + join(), so this call blocks until that pool's submitted work has finished and
  /// its workers have exited (after its terminate(), only the join); if that join fails, the
  /// old pool is terminated. A forked copy is left alone. Self-assignment does nothing.
  /// Throws nothing.
  pool& operator=(pool&&) noexcept;
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  /// close() + join() unless terminate() was called (terminate() if the join fails); never
  /// leaves a process or zombie. In a forked copy (after mp::fork()) it does nothing: the
  /// workers belong to the process that started them. Inside one of the pool's own
  /// callbacks it closes the pool without waiting: the submitted work still finishes (its
  /// callbacks still run), then the workers stop and the pool's threads end by themselves.
  ~pool();

  /// Runs target(args...) in a worker and returns its result (blocks). Rethrows as get().
  template <class F, class... Args>
  auto apply(F&& target, Args&&... args) {
    return apply_async(std::forward<F>(target), std::forward<Args>(args)...).get();
  }

  /// Submits target(args...); returns its future. Throws mp::serialization_error if an
  /// argument cannot be encoded, mp::state_error after close() or terminate(), and once the
  /// pool is broken the error that broke it (mp::state_error for a failed initializer,
  /// mp::start_error for workers that never became ready).
  template <class F, class... Args>
  auto apply_async(F&& target, Args&&... args) {
    static_assert(detail::check_call<F, Args...>());
    using R = detail::result_of<F>;
    detail::check_result<R>();
    detail::bound_call<F, Args...> bound(std::forward<F>(target), std::forward<Args>(args)...);
    const detail::call_spec spec = bound.spec();
    return async_result<R>(detail::pool_submit_parts(*impl(), &spec, 1),
                           &detail::value_decoder<R>::decode);
  }

  /// Calls target(item) for every item of `items`, in chunks of `chunksize` (0: Python's
  /// rule, ceil(len / (4 * workers))), and returns the results in order. If a chunk fails,
  /// rethrows its error once every chunk has finished (the first failed one in input order).
  /// An exception the input range throws propagates before anything is submitted. Past
  /// 64 MiB of encoded chunks waiting for a worker, the rest are encoded only as workers take
  /// chunks, so a huge input is not held twice (as Python pickles chunks lazily); a chunk
  /// that then cannot be encoded fails with mp::serialization_error, and so do those after it.
  template <class F, class Range>
  auto map(F&& target, const Range& items, std::size_t chunksize = 0) {
    static_assert(detail::check_map_target<F, false>());
    return submit_map<false>(std::forward<F>(target), items, chunksize, true).get();
  }
  /// The future of map(); ready once every chunk has finished. Every chunk is encoded before
  /// it returns. Throws, with nothing submitted: what iterating `items` throws (a range not
  /// laid out as the target's argument type is copied first), mp::serialization_error if an
  /// item cannot be encoded, mp::state_error after close() or terminate(), a broken pool's
  /// error (as apply_async). An empty `items` returns a ready empty result (on a pool that
  /// still takes work).
  template <class F, class Range>
  auto map_async(F&& target, const Range& items, std::size_t chunksize = 0) {
    static_assert(detail::check_map_target<F, false>());
    return submit_map<false>(std::forward<F>(target), items, chunksize);
  }
  /// map() for targets of several arguments: each item is a tuple (or pair) of arguments.
  template <class F, class Range>
  auto starmap(F&& target, const Range& items, std::size_t chunksize = 0) {
    static_assert(detail::check_map_target<F, true>());
    return submit_map<true>(std::forward<F>(target), items, chunksize, true).get();
  }
  /// The future of starmap(). Throws as map_async(): the input range's exceptions,
  /// mp::serialization_error, mp::state_error after close() or terminate(), a broken pool's
  /// error; an empty `items` returns a ready empty result (on a pool that still takes work).
  template <class F, class Range>
  auto starmap_async(F&& target, const Range& items, std::size_t chunksize = 0) {
    static_assert(detail::check_map_target<F, true>());
    return submit_map<true>(std::forward<F>(target), items, chunksize);
  }

  /// Lazy map: returns a range to iterate (single pass) whose items come in input order.
  /// imap() itself pulls and submits the first 2 * size() + 2 chunks; after that one more
  /// chunk is pulled each time one is consumed, so an endless input works. `items` must
  /// outlive the iteration when passed as an lvalue; an rvalue is moved into the returned
  /// range. imap(), begin() and ++ throw what pulling and submitting throw: the input range's
  /// exceptions, mp::serialization_error if an item cannot be encoded, mp::state_error once
  /// the pool is closed or terminated, a broken pool's error (as apply_async). A task's own
  /// error is thrown by *it for each of its chunk's items. An empty input submits nothing, but
  /// a closed pool still throws.
  template <class F, class Range>
  auto imap(F&& target, Range&& items, std::size_t chunksize = 1) {
    static_assert(detail::check_map_target<F, false>());
    return make_lazy(std::forward<F>(target), std::forward<Range>(items), chunksize, true);
  }
  /// As imap(), with results in the order their chunks complete; throws as imap().
  template <class F, class Range>
  auto imap_unordered(F&& target, Range&& items, std::size_t chunksize = 1) {
    static_assert(detail::check_map_target<F, false>());
    return make_lazy(std::forward<F>(target), std::forward<Range>(items), chunksize, false);
  }

  /// Accepts no more tasks; submitted ones still run. No-op if already closed or terminated.
  /// Throws mp::state_error on a moved-from pool.
  void close();
  /// Python's `shutdown(cancel_futures=True)`: close(), then cancels every task that has not
  /// started, as async_result::cancel() would one by one (their results throw
  /// mp::cancelled_error); tasks already running finish. Returns at once with the number of
  /// tasks cancelled (map chunks count one each; the chunks a map() that is still submitting
  /// has yet to queue are cancelled too, but not counted). join() then waits only for the
  /// running tasks. Returns 0 on a terminated pool. Same on every platform. Throws
  /// mp::state_error on a moved-from pool.
  std::size_t close(cancel_pending_t);
  /// Waits until every submitted task has finished and the workers have exited. Only after
  /// close() or terminate(); otherwise throws mp::state_error. Inside one of this pool's own
  /// callbacks it cannot wait for its own thread: with nothing outstanding it sends the
  /// workers their stop and returns (the pool's owner joins the threads, as ~pool does); with
  /// tasks still running (their results are read by that very thread) it asks the pool to
  /// stop once they finish and throws mp::state_error.
  void join();
  /// Stops the workers now (SIGTERM, then SIGKILL after a short grace; TerminateProcess on
  /// Windows), fails every pending result with mp::state_error, and reaps every worker
  /// before returning.
  void terminate();
  /// The number of worker processes (fixed at construction; replacing a worker keeps it).
  /// Throws mp::state_error on a moved-from pool.
  std::size_t size() const;

 private:
  const std::shared_ptr<detail::pool_impl>& impl() const;

  template <bool Star, class F, class Range>
  auto submit_map(F&& target, const Range& items, std::size_t chunksize, bool paced = false) {
    using P = detail::pointer_of<F>;
    using R = detail::result_of<F>;
    using Item = detail::item_of<F, Star>;
    static_assert(is_transferable_v<Item>,
                  "multiproc: the item type cannot be serialised (see mp::process).");
    P function = detail::to_function_pointer(std::forward<F>(target));
    // Items already laid out as Item (a std::vector<Item>, an array, a span) are chunked
    // where they are; any other range is copied into a vector of Item first. Either way every
    // chunk is encoded before submit returns, so the views never outlive `items`.
    std::vector<Item> materialised;
    const Item* data = nullptr;
    std::size_t count = 0;
    if constexpr (detail::contiguous_range_of<Range, Item>) {
      data = std::ranges::data(items);
      count = static_cast<std::size_t>(std::ranges::size(items));
    } else {
      for (auto&& item : items)
        materialised.emplace_back(item);
      data = materialised.data();
      count = materialised.size();
    }
    const std::size_t size =
        chunksize == 0 ? detail::default_chunksize(count, this->size()) : chunksize;
    std::vector<detail::chunk_view<Item>> views;
    views.reserve(count / size + 1);
    for (std::size_t first = 0; first < count; first += size) {
      views.push_back({data + first, std::min(size, count - first)});
    }
    (void)detail::chunk_invoker<P, Star>::registered;
    std::vector<detail::call_spec> calls;
    calls.reserve(views.size());
    for (const auto& view : views) {
      calls.push_back({&detail::chunk_invoker<P, Star>::call,
                       reinterpret_cast<detail::raw_function>(function), &detail::write_chunk<Item>,
                       &view});
    }
    auto state =
        detail::pool_submit_chunks(*impl(), calls.data(), calls.size(), paced, count, size);
    return async_result<std::vector<R>>(std::move(state), &detail::chunks_decoder<R>::decode);
  }

  template <class F, class Range>
  auto make_lazy(F&& target, Range&& items, std::size_t chunksize, bool ordered) {
    using P = detail::pointer_of<F>;
    using R = detail::result_of<F>;
    using Item = detail::item_of<F, false>;
    P function = detail::to_function_pointer(std::forward<F>(target));
    (void)detail::chunk_invoker<P, false>::registered;
    detail::call_spec base{&detail::chunk_invoker<P, false>::call,
                           reinterpret_cast<detail::raw_function>(function),
                           &detail::write_chunk<Item>, nullptr};
    // The source owns an rvalue range and refers to an lvalue one.
    using stored = std::conditional_t<std::is_lvalue_reference_v<Range>, Range,
                                      std::remove_reference_t<Range>>;
    struct source {
      stored range;
      decltype(std::begin(std::declval<std::remove_reference_t<stored>&>())) position;
      decltype(std::end(std::declval<std::remove_reference_t<stored>&>())) last;
      bool begun = false;
    };
    std::optional<std::size_t> size_hint;
    if constexpr (std::ranges::sized_range<std::remove_reference_t<Range>>) {
      size_hint = static_cast<std::size_t>(std::ranges::size(items));
    }
    auto state = std::make_shared<source>(source{std::forward<Range>(items), {}, {}, false});
    auto pull = [state](std::vector<Item>& out, std::size_t most) -> std::size_t {
      if (!state->begun) {
        state->position = std::begin(state->range);
        state->last = std::end(state->range);
        state->begun = true;
      }
      while (out.size() < most && state->position != state->last) {
        out.emplace_back(*state->position);
        ++state->position;
      }
      return out.size();
    };
    return detail::lazy_results<R, Item>(impl(), base, std::move(pull), chunksize, ordered,
                                         size_hint);
  }

  std::shared_ptr<detail::pool_impl> impl_;
};

}  // namespace multiproc
