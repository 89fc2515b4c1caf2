// POSIX channels: two pipes, close-on-exec from birth, SIGPIPE never delivered.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <multiproc/errors.hpp>

#include "../os/channel.hpp"
#include "descriptors.hpp"
#include "internal.hpp"
#include "platform.hpp"

namespace multiproc::detail::os {

namespace {
/// Set on threads that block SIGPIPE for good (supervisors, worker main threads): their
/// writes need no per-call mask dance.
thread_local bool broken_pipe_blocked_for_good = false;

/// Blocks SIGPIPE for one write, so that a vanished reader gives EPIPE instead of killing the
/// process, and consumes the SIGPIPE that write raised (only that one: a SIGPIPE already
/// pending for other reasons stays pending).
class broken_pipe_signal_held {
 public:
  broken_pipe_signal_held() noexcept {
    if (broken_pipe_blocked_for_good) return;
    active_ = true;
    sigemptyset(&pipe_only_);
    sigaddset(&pipe_only_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only_, &previous_);
    was_pending_ = pending();
  }
  /// After a write failed with `error`.
  void consume_own_signal(int error) noexcept {
    if (!active_ || error != EPIPE || was_pending_ || !pending()) return;
    // Pending, so sigwait returns at once (portable POSIX, unlike sigtimedwait).
    int taken = 0;
    sigwait(&pipe_only_, &taken);
  }
  ~broken_pipe_signal_held() {
    if (active_) pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  broken_pipe_signal_held(const broken_pipe_signal_held&) = delete;
  broken_pipe_signal_held& operator=(const broken_pipe_signal_held&) = delete;

 private:
  bool pending() const noexcept {
    sigset_t set;
    sigpending(&set);
    return sigismember(&set, SIGPIPE) == 1;
  }
  bool active_ = false;
  bool was_pending_ = false;
  sigset_t pipe_only_{};
  sigset_t previous_{};
};
}  // namespace

std::size_t channel::read_some(void* buffer, std::size_t size) {
  for (;;) {
    const ssize_t got = ::read(static_cast<int>(read_.get()), buffer, size);
    if (got >= 0) return static_cast<std::size_t>(got);
    if (errno == EINTR) continue;
    throw posix::last_error("multiproc: reading from a channel");
  }
}

bool channel::readable_now() const noexcept {
  pollfd p{static_cast<int>(read_.get()), POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;  // POLLIN, or POLLHUP/POLLERR: a read would not wait either
}

void channel::write_all(const void* data, std::size_t size) {
  broken_pipe_signal_held held;
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t wrote = ::write(static_cast<int>(write_.get()), bytes, size);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      const int failure = errno;
      held.consume_own_signal(failure);
      throw std::system_error(failure, std::generic_category(), "multiproc: writing to a channel");
    }
    bytes += wrote;
    size -= static_cast<std::size_t>(wrote);
  }
}

std::size_t channel::write_capacity() const noexcept {
  return posix::platform::pipe_capacity(static_cast<int>(write_.get()));
}

std::pair<channel, channel> make_channel_pair() {
  const posix::creating_descriptors guard;
  int to_child[2];
  int to_parent[2];
  if (!posix::platform::make_cloexec_pipe(to_child)) {
    throw start_error("multiproc: could not create a channel", {errno, std::generic_category()});
  }
  if (!posix::platform::make_cloexec_pipe(to_parent)) {
    const int saved = errno;
    ::close(to_child[0]);
    ::close(to_child[1]);
    throw start_error("multiproc: could not create a channel", {saved, std::generic_category()});
  }
  posix::platform::enlarge_pipe(to_child[1]);
  posix::platform::enlarge_pipe(to_parent[1]);
  for (int fd : {to_child[0], to_child[1], to_parent[0], to_parent[1]}) {
    posix::register_descriptor(fd);
  }
  return {channel(to_parent[0], to_child[1]), channel(to_child[0], to_parent[1])};
}

void block_broken_pipe_signal_in_this_thread() noexcept {
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, nullptr);
  broken_pipe_blocked_for_good = true;
}

}  // namespace multiproc::detail::os
