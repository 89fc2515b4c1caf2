// The portable part of the child seam: moves and Python's exit-code convention.
#include "child.hpp"

#include <utility>

namespace multiproc::detail::os {

int python_exit_code(child_end end) noexcept {
  return end.by_signal ? -end.value : end.value;
}

child::child(child&& other) noexcept {
  std::lock_guard<std::mutex> lock(other.mutex_);
  pid_ = std::exchange(other.pid_, 0);
  handle_ = std::move(other.handle_);
  report_ = std::move(other.report_);
  ended_ = std::exchange(other.ended_, false);
  exit_code_ = std::exchange(other.exit_code_, std::nullopt);
  signal_sent_ = std::exchange(other.signal_sent_, 0);
  remote_ = std::move(other.remote_);
}

child& child::operator=(child&& other) noexcept {
  if (this != &other) {
    std::scoped_lock lock(mutex_, other.mutex_);
    pid_ = std::exchange(other.pid_, 0);
    handle_ = std::move(other.handle_);  // closes the handle this one held
    report_ = std::move(other.report_);
    ended_ = std::exchange(other.ended_, false);
    exit_code_ = std::exchange(other.exit_code_, std::nullopt);
    signal_sent_ = std::exchange(other.signal_sent_, 0);
    remote_ = std::move(other.remote_);
  }
  return *this;
}

}  // namespace multiproc::detail::os
