// POSIX channels: two pipes, close-on-exec from birth, SIGPIPE never delivered.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <ctime>

#include <multiproc/errors.hpp>

#include "../backend.hpp"
#include "internal.hpp"

namespace multiproc::detail::os {

namespace posix {
namespace {
constexpr int descriptor_slots = 16384;
std::atomic<int> registered[descriptor_slots];  // fd + 1; 0 = free (constant-initialised)
// Counts the fork clean-ups this process went through (see descriptor_generation()).
std::atomic<unsigned> generation{0};
}  // namespace

void register_descriptor(int fd) noexcept {
  for (auto& slot : registered) {
    int expected = 0;
    if (slot.compare_exchange_strong(expected, fd + 1)) return;
  }
  // Table full: the descriptor stays unregistered; a forked child may then hold it.
}

bool unregister_descriptor(int fd) noexcept {
  for (auto& slot : registered) {
    int expected = fd + 1;
    if (slot.compare_exchange_strong(expected, 0)) return true;
  }
  return false;
}

void close_registered(int fd, unsigned opened_in) noexcept {
  // Under the lock: a fork between unregistering and closing would hand the child a
  // descriptor it does not know to close (a sibling's pipe end, hiding that sibling's death).
  const creating_descriptors guard;
  // Opened before a fork clean-up this process went through: closed by it already, and the
  // number may be one of the program's own files, or a new descriptor of the library, now.
  if (opened_in != generation.load()) return;
  unregister_descriptor(fd);
  ::close(fd);
}

std::shared_mutex& descriptor_creation_mutex() {
  static std::shared_mutex mutex;
  return mutex;
}

void close_registered_descriptors(int keep_a, int keep_b) noexcept {
  generation.fetch_add(1);
  for (auto& slot : registered) {
    const int fd = slot.load() - 1;
    if (fd < 0 || fd == keep_a || fd == keep_b) continue;
    ::close(fd);
    slot.store(0);
  }
}
}  // namespace posix

unsigned descriptor_generation() noexcept {
  return posix::generation.load();
}

namespace {
thread_local bool broken_pipe_blocked_for_good = false;

void close_descriptor(native_handle& fd, unsigned opened_in) noexcept {
  if (fd < 0) return;
  posix::close_registered(static_cast<int>(fd), opened_in);
  fd = invalid_handle;
}

#if !defined(__linux__)
bool set_cloexec(int fd) {
  return ::fcntl(fd, F_SETFD, FD_CLOEXEC) == 0;
}
#endif

bool make_pipe(int fds[2]) {
#if defined(__linux__)
  return ::pipe2(fds, O_CLOEXEC) == 0;
#else
  // No pipe2 here: a fork+exec on another thread between these calls could inherit the
  // pipe; mp's own spawns close everything above the channel, so only foreign execs can.
  if (::pipe(fds) != 0) return false;
  set_cloexec(fds[0]);
  set_cloexec(fds[1]);
  return true;
#endif
}
}  // namespace

std::size_t channel::read_some(void* buffer, std::size_t size) {
  for (;;) {
    const ssize_t got = ::read(static_cast<int>(read_), buffer, size);
    if (got >= 0) return static_cast<std::size_t>(got);
    if (errno == EINTR) continue;
    throw posix::last_error("multiproc: reading from a channel");
  }
}

bool channel::readable_now() const noexcept {
  pollfd p{static_cast<int>(read_), POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;  // POLLIN, or POLLHUP/POLLERR: a read would not wait either
}

void channel::write_all(const void* data, std::size_t size) {
  // Block SIGPIPE while writing, so a vanished reader gives EPIPE instead of killing the
  // process; a SIGPIPE this write raised is consumed before unblocking.
  sigset_t pipe_only, previous;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  const bool restore = !broken_pipe_blocked_for_good;
  bool was_pending = false;
  if (restore) {
    pthread_sigmask(SIG_BLOCK, &pipe_only, &previous);
    sigset_t pending;
    sigpending(&pending);
    was_pending = sigismember(&pending, SIGPIPE) == 1;
  }
  const char* bytes = static_cast<const char*>(data);
  int failure = 0;
  while (size > 0) {
    const ssize_t wrote = ::write(static_cast<int>(write_), bytes, size);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      failure = errno;
      break;
    }
    bytes += wrote;
    size -= static_cast<std::size_t>(wrote);
  }
  if (restore) {
    if (failure == EPIPE && !was_pending) {
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe_only, nullptr, &zero) == -1 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  }
  if (failure != 0) {
    throw std::system_error(failure, std::generic_category(), "multiproc: writing to a channel");
  }
}

std::size_t channel::write_capacity() const noexcept {
#if defined(F_GETPIPE_SZ)
  const int size = ::fcntl(static_cast<int>(write_), F_GETPIPE_SZ);
  if (size > 0) return static_cast<std::size_t>(size);
#endif
  return 16 * 1024;  // the smallest pipe buffer of the POSIX systems we know (macOS)
}

void channel::close() noexcept {
  if (read_ == write_) write_ = invalid_handle;
  close_descriptor(read_, generation_);
  close_descriptor(write_, generation_);
}

void channel::close_write() noexcept {
  if (write_ == read_) return;
  close_descriptor(write_, generation_);
}

std::pair<channel, channel> make_channel_pair() {
  const posix::creating_descriptors guard;
  int to_child[2];
  int to_parent[2];
  if (!make_pipe(to_child)) {
    throw start_error("multiproc: could not create a channel", {errno, std::generic_category()});
  }
  if (!make_pipe(to_parent)) {
    const int saved = errno;
    ::close(to_child[0]);
    ::close(to_child[1]);
    throw start_error("multiproc: could not create a channel", {saved, std::generic_category()});
  }
#if defined(F_SETPIPE_SZ)
  // Bigger pipes let tiny tasks and results flow in large batches; failure is harmless.
  ::fcntl(to_child[1], F_SETPIPE_SZ, 256 * 1024);
  ::fcntl(to_parent[1], F_SETPIPE_SZ, 256 * 1024);
#endif
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
