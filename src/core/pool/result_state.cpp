// The result state (see result_state.hpp) and the functions async_result reaches it by.
#include "result_state.hpp"

#include <algorithm>
#include <atomic>

#include <multiproc/detail/timeout.hpp>
#include <multiproc/errors.hpp>

#include "../protocol/codec.hpp"

namespace multiproc::detail {

std::size_t result_state::items_of(std::size_t index) const noexcept {
  const std::size_t first = index * chunk_items_;
  if (first >= items_) return 0;
  return std::min(chunk_items_, items_ - first);
}

std::vector<std::function<void()>> result_state::settle(std::size_t index, result_payload result,
                                                        bool cancelled) {
  std::vector<std::function<void()>> to_run;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    part& p = parts_[index];
    if (p.settled) return to_run;
    p.settled = true;
    if (cancelled) {
      ++cancelled_parts_;
    } else if (result.error) {
      ++failed_parts_;
    }
    p.result = std::move(result);
    items_done_ += items_of(index);
    const bool complete = --remaining_ == 0;
    // Watchers hear it under the lock: unwatch() takes it too, so a watcher that returned
    // from unwatch() is never called again and may go.
    if (watches_ != nullptr) {
      const settle_news news{complete, failed_parts_ != 0, items_done_};
      for (state_watch* w = watches_; w != nullptr; w = w->next) {
        if (complete || w->every_part) w->watcher->settled(w->index, news);
      }
    }
    if (!complete) return to_run;
    to_run.swap(callbacks_);
  }
  // Notified after the mutex is released: a waiter woken under it would at once block on it
  // again (one more context switch per result). The caller holds a reference to this state,
  // so it outlives the notification.
  done_.notify_all();
  return to_run;
}

void result_state::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return remaining_ == 0; });
}

bool result_state::wait_for(std::chrono::nanoseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return done_.wait_for(lock, timeout, [&] { return remaining_ == 0; });
}

bool result_state::ready() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return remaining_ == 0;
}

bool result_state::cancelled() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cancelled_parts_ != 0;
}

bool result_state::failed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failed_parts_ != 0;
}

std::size_t result_state::items_done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return items_done_;
}

bool result_state::watch(state_watch& watch) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (remaining_ == 0) return false;
  watch.previous = nullptr;
  watch.next = watches_;
  if (watches_ != nullptr) watches_->previous = &watch;
  watches_ = &watch;
  watch.linked = true;
  return true;
}

void result_state::unwatch(state_watch& watch) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!watch.linked) return;
  if (watch.previous != nullptr) {
    watch.previous->next = watch.next;
  } else {
    watches_ = watch.next;
  }
  if (watch.next != nullptr) watch.next->previous = watch.previous;
  watch.previous = watch.next = nullptr;
  watch.linked = false;
}

std::exception_ptr result_state::first_error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& p : parts_) {
    if (p.result.error) return p.result.error;
  }
  return nullptr;
}

void result_state::then(std::function<void()> callback) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (remaining_ != 0) {
      callbacks_.push_back(std::move(callback));
      return;
    }
  }
  callback();
}

namespace {

thread_local const void* this_threads_pool = nullptr;
std::atomic<int> blocked_waiter_count{0};

}  // namespace

counted_as_blocked::counted_as_blocked() noexcept {
  blocked_waiter_count.fetch_add(1, std::memory_order_relaxed);
}
counted_as_blocked::~counted_as_blocked() {
  blocked_waiter_count.fetch_sub(1, std::memory_order_relaxed);
}

/// A callback that waits, without a deadline, for a result its own pool has not settled yet
/// could wait forever: its thread is the one that reads results (of its worker, maybe the
/// very one awaited). Python deadlocks there; this says so instead.
void refuse_to_wait_forever_in_a_callback(const result_state& state) {
  if (this_threads_pool == nullptr || state.owner() != this_threads_pool || state.ready()) return;
  throw state_error(
      "async_result: waiting without a deadline, inside a callback of the same pool, for a "
      "result that is not ready would deadlock (the callback runs on the thread that reads "
      "results); chain another then() instead, or wait outside the callback");
}

void set_supervised_pool(const void* pool) noexcept {
  this_threads_pool = pool;
}
const void* supervised_pool() noexcept {
  return this_threads_pool;
}
int blocked_waiters() noexcept {
  return blocked_waiter_count.load(std::memory_order_relaxed);
}

void state_wait(result_state& state) {
  refuse_to_wait_forever_in_a_callback(state);
  if (state.ready()) return;
  const counted_as_blocked counted;
  state.wait();
}
bool state_wait_for(result_state& state, std::chrono::nanoseconds timeout) {
  if (timeout >= no_deadline_beyond) {
    state_wait(state);
    return true;
  }
  if (state.ready()) return true;
  const counted_as_blocked counted;
  return state.wait_for(timeout);
}
bool state_ready(const result_state& state) noexcept {
  return state.ready();
}
bool state_successful(const result_state& state) {
  if (!state.ready()) throw state_error("async_result::successful: the result is not ready");
  return state.first_error() == nullptr;
}
void state_rethrow(const result_state& state) {
  if (auto error = state.first_error()) std::rethrow_exception(error);
}
std::size_t state_parts(const result_state& state) noexcept {
  return state.parts();
}
void state_decode(const result_state& state, std::size_t index,
                  void (*reader)(std::istream& in, void* out), void* out) {
  const result_payload& p = state.at(index);
  const char* data = p.block ? p.block.data() : p.bytes.data();
  const std::size_t size = p.block ? p.block_size : p.bytes.size();
  try {
    reader(memory_input(data, size), out);
  } catch (const std::exception& e) {
    throw serialization_error(serialization_error::phase::decode_result, e.what());
  }
}
void state_then(result_state& state, std::function<void()> callback) {
  state.then(std::move(callback));
}
bool state_cancelled(const result_state& state) {
  return state.cancelled();
}
std::size_t state_items_done(const result_state& state) {
  return state.items_done();
}
std::size_t state_items_total(const result_state& state) noexcept {
  return state.items_total();
}

}  // namespace multiproc::detail
