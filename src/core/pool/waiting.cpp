// Waiting on many results at once: mp::wait and mp::as_completed (include/multiproc/wait.hpp).
// One completion_queue watches every state it is given (result_state::watch: a node of the
// state's own list, no thread and no polling); the thread that settles a state's last part
// tells the queue, which wakes the waiter. States of any number of pools mix freely.
#include <multiproc/wait.hpp>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>

#include <multiproc/errors.hpp>

#include "result_state.hpp"

namespace multiproc::detail {

class completion_queue final : public state_watcher {
 public:
  completion_queue(state_list states, std::chrono::nanoseconds timeout)
      : states_(std::move(states)), watches_(states_.size()) {
    if (timeout < no_deadline_beyond) deadline_ = std::chrono::steady_clock::now() + timeout;
    // Never reallocated: settled() may not throw.
    finished_.reserve(states_.size());
    for (std::size_t i = 0; i < states_.size(); ++i) {
      state_watch& w = watches_[i];
      w.watcher = this;
      w.index = i;
      if (states_[i]->watch(w)) continue;
      const bool failed = states_[i]->failed();
      std::lock_guard<std::mutex> lock(mutex_);
      finish_locked(i, failed);
    }
  }
  ~completion_queue() {
    for (std::size_t i = 0; i < states_.size(); ++i)
      states_[i]->unwatch(watches_[i]);
  }
  completion_queue(const completion_queue&) = delete;
  completion_queue& operator=(const completion_queue&) = delete;

  void settled(std::size_t index, const settle_news& news) noexcept override {
    if (!news.complete) return;
    std::lock_guard<std::mutex> lock(mutex_);
    finish_locked(index, news.failed);
    if (sleeping_) changed_.notify_one();
  }

  /// Waits until `done` holds (given the completions and whether one failed) or the deadline
  /// passes.
  template <class Condition>
  void wait_until(Condition done) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (done(finished_.size(), failed_)) return;
    const counted_as_blocked counted;
    sleeping_ = true;
    const auto holds = [&] { return done(finished_.size(), failed_); };
    if (deadline_) {
      changed_.wait_until(lock, *deadline_, holds);
    } else {
      changed_.wait(lock, holds);
    }
    sleeping_ = false;
  }

  /// The next position in completion order; nullopt past the deadline.
  std::optional<std::size_t> next() {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto available = [&] { return taken_ < finished_.size(); };
    if (!available()) {
      const counted_as_blocked counted;
      sleeping_ = true;
      const bool got = deadline_ ? changed_.wait_until(lock, *deadline_, available)
                                 : (changed_.wait(lock, available), true);
      sleeping_ = false;
      if (!got) return std::nullopt;
    }
    return finished_[taken_++];
  }

  std::size_t unfinished() {
    std::lock_guard<std::mutex> lock(mutex_);
    return states_.size() - finished_.size();
  }
  std::size_t size() const noexcept { return states_.size(); }

 private:
  void finish_locked(std::size_t index, bool failed) noexcept {
    finished_.push_back(index);
    failed_ = failed_ || failed;
  }

  const state_list states_;
  std::vector<state_watch> watches_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::size_t> finished_;  ///< positions, in the order they completed
  std::size_t taken_ = 0;              ///< how many of them next() has returned
  bool failed_ = false;
  bool sleeping_ = false;
};

namespace {
void refuse_without_deadline_in_a_callback(const state_list& states,
                                           std::chrono::nanoseconds timeout) {
  if (timeout < no_deadline_beyond) return;
  for (const auto& state : states)
    refuse_to_wait_forever_in_a_callback(*state);
}
}  // namespace

wait_result wait_states(const state_list& states, return_when when,
                        std::chrono::nanoseconds timeout) {
  refuse_without_deadline_in_a_callback(states, timeout);
  const std::size_t total = states.size();
  if (total != 0) {
    completion_queue queue(states, timeout);
    queue.wait_until([&](std::size_t finished, bool failed) {
      switch (when) {
        case return_when::first_completed:
          return finished != 0;
        case return_when::first_exception:
          return failed || finished == total;
        case return_when::all_completed:
          break;
      }
      return finished == total;
    });
  }
  // What is ready now: results that completed since the condition held count as done too.
  wait_result result;
  for (std::size_t i = 0; i < total; ++i)
    (states[i]->ready() ? result.done : result.not_done).push_back(i);
  return result;
}

std::shared_ptr<completion_queue> watch_completions(state_list states,
                                                    std::chrono::nanoseconds timeout) {
  refuse_without_deadline_in_a_callback(states, timeout);
  return std::make_shared<completion_queue>(std::move(states), timeout);
}

std::size_t next_completion(completion_queue& queue) {
  if (const auto position = queue.next()) return *position;
  throw timeout_error("as_completed: " + std::to_string(queue.unfinished()) + " of " +
                      std::to_string(queue.size()) + " results unfinished at the deadline");
}

}  // namespace multiproc::detail
