// The shared state behind an async_result: one part per task (a map has one per chunk), each
// settled once with its result or error; waiters and then() callbacks are released when the
// last part settles. include/multiproc/async_result.hpp reaches it through the state_*
// functions defined in result_state.cpp.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <multiproc/async_result.hpp>

#include "../protocol/result.hpp"

namespace multiproc::detail {

class pool_impl;

/// What a watcher hears when a watched state settles a part.
struct settle_news {
  bool complete = false;       ///< that was the last part: the state is ready
  bool failed = false;         ///< some part failed (a cancelled part does not count)
  std::size_t items_done = 0;  ///< items of the settled parts so far (see result_state)
};

/// Told of settlements of the states it watches (mp::wait, mp::as_completed, mp::progress).
class state_watcher {
 public:
  /// Called by the settling thread with the state's lock held: it must not call the state,
  /// and must not block beyond taking a lock of its own.
  virtual void settled(std::size_t index, const settle_news& news) noexcept = 0;

 protected:
  ~state_watcher() = default;
};

/// One watcher's registration with one state: a node of the state's intrusive list, owned by
/// the watcher (no allocation per registration). Its fields belong to the state's lock while
/// it is linked.
struct state_watch {
  state_watcher* watcher = nullptr;
  std::size_t index = 0;    ///< passed back to the watcher: which of its states this is
  bool every_part = false;  ///< hears every part, not only the last
  bool linked = false;
  state_watch* previous = nullptr;
  state_watch* next = nullptr;
};

class result_state {
 public:
  /// `owner`: the pool whose supervisors settle this state (compared, never dereferenced);
  /// `pool`: the same pool, for cancel(). `items`: what the parts hold in all (0: one item per
  /// part), `chunk_items` per part, the last part holding the rest (a map's chunks).
  explicit result_state(std::size_t parts, const void* owner = nullptr,
                        std::weak_ptr<pool_impl> pool = {}, std::size_t items = 0,
                        std::size_t chunk_items = 1)
      : owner_(owner),
        pool_(std::move(pool)),
        parts_(parts),
        remaining_(parts),
        items_(items == 0 ? parts : items),
        chunk_items_(chunk_items == 0 ? 1 : chunk_items) {}

  const void* owner() const noexcept { return owner_; }
  /// The pool that settles this state, while it lives.
  const std::weak_ptr<pool_impl>& pool() const noexcept { return pool_; }

  /// Encoded bytes of this state's parts still queued in the pool (not yet with a worker).
  /// Guarded by the owning pool's mutex, not by this state's.
  std::size_t waiting_bytes = 0;
  /// Where part `index` was last queued in the pool's pending queue (its task's queue key; 0:
  /// never). Guarded by the owning pool's mutex, not by this state's.
  std::int64_t& queue_key(std::size_t index) noexcept { return parts_[index].queue_key; }

  /// Records the outcome of part `index` (once: a second outcome is ignored); returns the
  /// callbacks to run if that completed the state. Run them outside every lock. `cancelled`:
  /// the outcome is the part's cancellation (cancelled() is true from then on).
  std::vector<std::function<void()>> settle(std::size_t index, result_payload result,
                                            bool cancelled = false);

  void wait();
  bool wait_for(std::chrono::nanoseconds timeout);
  bool ready() const;
  /// True once a part was cancelled (its outcome is mp::cancelled_error).
  bool cancelled() const;
  /// True once a part failed other than by its cancellation.
  bool failed() const;
  /// The first failed part's error, in part order (nullptr if none failed).
  std::exception_ptr first_error() const;
  std::size_t parts() const noexcept { return parts_.size(); }
  /// Items of the parts settled so far, and in all.
  std::size_t items_done() const;
  std::size_t items_total() const noexcept { return items_; }
  /// Valid once ready: parts never change after settling.
  const result_payload& at(std::size_t index) const { return parts_[index].result; }
  /// Runs `callback` once the state is ready: at once, in this thread, if it already is.
  void then(std::function<void()> callback);

  /// Links `watch` (its watcher, index and every_part set): from now on its watcher hears of
  /// settlements. False, and nothing linked, if the state is ready already.
  bool watch(state_watch& watch);
  /// Unlinks `watch` if it is linked; afterwards its watcher hears nothing more through it.
  void unwatch(state_watch& watch);

 private:
  struct part {
    result_payload result;
    bool settled = false;
    std::int64_t queue_key = 0;
  };
  std::size_t items_of(std::size_t index) const noexcept;

  const void* const owner_;
  const std::weak_ptr<pool_impl> pool_;
  mutable std::mutex mutex_;
  std::condition_variable done_;
  std::vector<part> parts_;
  std::size_t remaining_;
  const std::size_t items_;
  const std::size_t chunk_items_;
  std::size_t items_done_ = 0;
  std::size_t failed_parts_ = 0;
  std::size_t cancelled_parts_ = 0;
  std::vector<std::function<void()>> callbacks_;
  state_watch* watches_ = nullptr;
};

/// Throws state_error if the calling thread is a supervisor of the pool that settles `state`
/// and the state is not ready: waiting there without a deadline could wait for this very
/// thread (see async_result::then).
void refuse_to_wait_forever_in_a_callback(const result_state& state);

/// Counts the calling thread as blocked on a result while it lives (blocked_waiters()).
class counted_as_blocked {
 public:
  counted_as_blocked() noexcept;
  ~counted_as_blocked();
  counted_as_blocked(const counted_as_blocked&) = delete;
  counted_as_blocked& operator=(const counted_as_blocked&) = delete;
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
