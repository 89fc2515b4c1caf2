// POSIX children: fork, spawn (posix_spawn of the program's own image), waiting, signals.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#define MULTIPROC_DETAIL_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MULTIPROC_DETAIL_THREAD_SANITIZER 1
#endif
#endif
#if defined(MULTIPROC_DETAIL_THREAD_SANITIZER)
#include <sanitizer/tsan_interface.h>
#endif

#if defined(__linux__)
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif
#if defined(__APPLE__)
#include <mach-o/dyld.h>
#endif

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <new>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include <multiproc/errors.hpp>

#include "../backend.hpp"
#include "internal.hpp"

extern char** environ;

namespace multiproc::detail::os {

namespace {

std::mutex executable_mutex;
std::string executable_override;

/// Opens a pidfd for `pid`; the caller holds the descriptor creation lock.
int open_process_descriptor_locked(long pid) noexcept {
#if defined(__linux__) && defined(SYS_pidfd_open)
  // A pidfd lets join(timeout) sleep in poll() instead of polling waitpid.
  const long fd = ::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0);
  if (fd >= 0) {
    ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
    posix::register_descriptor(static_cast<int>(fd));
    return static_cast<int>(fd);
  }
#else
  (void)pid;
#endif
  return -1;
}

int open_process_descriptor(long pid) noexcept {
  const posix::creating_descriptors guard;
  return open_process_descriptor_locked(pid);
}

int python_exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return 255;
}

std::string own_executable() {
  {
    std::lock_guard<std::mutex> lock(executable_mutex);
    if (!executable_override.empty()) return executable_override;
  }
#if defined(__linux__)
  // The kernel's link to the running image: never a PATH lookup, and right even if argv[0]
  // is relative or the file was renamed.
  return "/proc/self/exe";
#elif defined(__APPLE__)
  std::uint32_t size = 0;
  _NSGetExecutablePath(nullptr, &size);
  std::string path(size, '\0');
  if (_NSGetExecutablePath(path.data(), &size) != 0) return {};
  path.resize(std::strlen(path.c_str()));
  return path;
#else
  return "/proc/curproc/file";
#endif
}

void flush_standard_streams() {
  // Unflushed output would otherwise be written twice: once by each side of the fork.
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
}

}  // namespace

// ---- child ------------------------------------------------------------------------------------

child::child(child&& other) noexcept {
  std::lock_guard<std::mutex> lock(other.mutex_);
  pid_ = std::exchange(other.pid_, 0);
  handle_ = std::exchange(other.handle_, invalid_handle);
  exit_code_ = std::exchange(other.exit_code_, std::nullopt);
  signal_sent_ = std::exchange(other.signal_sent_, 0);
  generation_ = other.generation_;
}

child& child::operator=(child&& other) noexcept {
  if (this != &other) {
    std::scoped_lock lock(mutex_, other.mutex_);
    if (handle_ >= 0) {
      posix::close_registered(static_cast<int>(handle_), generation_);
    }
    pid_ = std::exchange(other.pid_, 0);
    handle_ = std::exchange(other.handle_, invalid_handle);
    exit_code_ = std::exchange(other.exit_code_, std::nullopt);
    signal_sent_ = std::exchange(other.signal_sent_, 0);
    generation_ = other.generation_;
  }
  return *this;
}

child::~child() {
  if (handle_ >= 0) {
    posix::close_registered(static_cast<int>(handle_), generation_);
  }
}

bool child::wait(std::optional<std::chrono::nanoseconds> timeout) {
  long pid;
  native_handle pidfd;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (exit_code_ || pid_ == 0) return true;
    pid = pid_;
    pidfd = handle_;
    ++waiters_;
  }
  // The pidfd is closed once the child is reaped, by the last thread to leave wait(): one
  // closed under another thread's poll() could be reused by anything meanwhile.
  struct leave_wait {
    child& self;
    ~leave_wait() {
      std::lock_guard<std::mutex> lock(self.mutex_);
      if (--self.waiters_ == 0 && self.exit_code_ && self.handle_ >= 0) {
        posix::close_registered(static_cast<int>(self.handle_), self.generation_);
        self.handle_ = invalid_handle;
      }
    }
  } leave{*this};
  // Wait without reaping (WNOWAIT), then reap under the lock: while the child is unreaped
  // its pid cannot be reused, so terminate()/kill() from another thread never hit a stranger.
  auto ended_unreaped = [&](int flags) {
    siginfo_t info{};
    for (;;) {
      const int rc = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT | flags);
      if (rc == 0) return info.si_pid != 0;
      if (errno == EINTR) continue;
      return true;  // ECHILD: someone else reaped it; reap_locked() records that
    }
  };
  bool ended = false;
  if (!timeout) {
    ended = ended_unreaped(0);
  } else if (timeout->count() <= 0) {
    ended = ended_unreaped(WNOHANG);
  } else if (pidfd >= 0) {
    const auto deadline = std::chrono::steady_clock::now() + *timeout;
    for (;;) {
      if (ended_unreaped(WNOHANG)) {
        ended = true;
        break;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() < 0) break;
      pollfd p{static_cast<int>(pidfd), POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left.count()) + 1);
    }
  } else {
    // No pidfd (old kernel, other POSIX): poll waitid with a growing pause.
    const auto deadline = std::chrono::steady_clock::now() + *timeout;
    auto pause = std::chrono::microseconds(200);
    for (;;) {
      if (ended_unreaped(WNOHANG)) {
        ended = true;
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
      ::usleep(static_cast<useconds_t>(pause.count()));
      pause = std::min(pause * 2, std::chrono::microseconds(20000));
    }
  }
  if (!ended) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  if (exit_code_) return true;
  int status = 0;
  for (;;) {
    const pid_t rc = ::waitpid(static_cast<pid_t>(pid_), &status, WNOHANG);
    if (rc == static_cast<pid_t>(pid_)) {
      exit_code_ = python_exit_code(status);
      break;
    }
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) {
      exit_code_ = 255;  // ECHILD: the program reaped it itself (waitpid(-1)); status unknown
      break;
    }
    return false;  // not yet reapable (should not happen after waitid said it ended)
  }
  return true;
}

std::optional<int> child::exit_code() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return exit_code_;
}

void child::send_signal(int signal_number) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  if (pid_ == 0 || exit_code_) return;
  signal_sent_ = signal_number;
  ::kill(static_cast<pid_t>(pid_), signal_number);
}

void child::terminate() noexcept {
  send_signal(SIGTERM);
}
void child::kill() noexcept {
  send_signal(SIGKILL);
}

// ---- fork -------------------------------------------------------------------------------------

namespace {
/// Forks with every signal blocked and the code cache lock held (no other thread can then
/// hold it in the child). Returns fork's result; in the child the mask is restored.
/// ThreadSanitizer does not see a lock re-created in place (a static initialiser, no call):
/// without this it would take the fork child's locks for the ones its parent held.
void forget_locks_held_at_fork(void* descriptors, void* code_cache) noexcept {
#if defined(MULTIPROC_DETAIL_THREAD_SANITIZER)
  for (void* lock : {descriptors, code_cache}) {
    __tsan_mutex_pre_unlock(lock, 0);
    __tsan_mutex_post_unlock(lock, 0);
  }
#else
  (void)descriptors;
  (void)code_cache;
#endif
}

pid_t guarded_fork(sigset_t& previous) {
  flush_standard_streams();
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  std::unique_lock<std::shared_mutex> descriptors(posix::descriptor_creation_mutex());
  std::unique_lock<std::mutex> code_cache(posix::code_cache_mutex());
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The child's copies are held by a thread that does not exist there (an rwlock remembers
    // its writer's tid): make them fresh instead of unlocking them.
    descriptors.release();
    code_cache.release();
    forget_locks_held_at_fork(&posix::descriptor_creation_mutex(), &posix::code_cache_mutex());
    new (&posix::descriptor_creation_mutex()) std::shared_mutex;
    new (&posix::code_cache_mutex()) std::mutex;
  }
  return pid;
}
}  // namespace

child fork_child(int (*entry)(void* context), void* context, const channel* keep, child_kind kind) {
  const long parent = static_cast<long>(::getpid());
  sigset_t previous;
  const pid_t pid = guarded_fork(previous);
  if (pid == 0) {
    posix::close_registered_descriptors(keep ? static_cast<int>(keep->read_handle()) : -1,
                                        keep ? static_cast<int>(keep->write_handle()) : -1);
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    if (kind == child_kind::pool_worker && !die_with_parent(parent)) ::_exit(0);
    const int code = entry(context);
    flush_standard_streams();
    ::_exit(code);
  }
  const int saved = errno;
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) throw start_error("multiproc: fork failed", {saved, std::generic_category()});
  return child(pid, open_process_descriptor(pid));
}

long fork_plain() {
  sigset_t previous;
  const pid_t pid = guarded_fork(previous);
  const int saved = errno;
  if (pid == 0) posix::close_registered_descriptors(-1, -1);
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) throw start_error("multiproc: fork failed", {saved, std::generic_category()});
  return pid;
}

// ---- spawn ------------------------------------------------------------------------------------

namespace {
constexpr int child_read_fd = 3;
constexpr int child_write_fd = 4;

/// RAII for the posix_spawn attribute objects.
struct spawn_setup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  spawn_setup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attributes);
  }
  ~spawn_setup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
  }
};

/// A close-on-exec copy at 10 or above, so the dup2 onto 3 and 4 never overwrites a source.
int high_copy(native_handle fd) {
  const int copy = ::fcntl(static_cast<int>(fd), F_DUPFD_CLOEXEC, 10);
  if (copy < 0)
    throw start_error("multiproc: could not prepare the child's channel",
                      {errno, std::generic_category()});
  return copy;
}
}  // namespace

child spawn_child(channel& child_end, std::string_view secret, child_kind /*kind*/) {
  const std::string executable = own_executable();
  // The copies below are not registered: no fork may happen until they are closed again.
  std::optional<posix::creating_descriptors> guard(std::in_place);
  const int read_copy = high_copy(child_end.read_handle());
  int write_copy = -1;
  try {
    write_copy = high_copy(child_end.write_handle());
  } catch (...) {
    ::close(read_copy);
    throw;
  }
  spawn_setup setup;
  posix_spawn_file_actions_adddup2(&setup.actions, read_copy, child_read_fd);
  posix_spawn_file_actions_adddup2(&setup.actions, write_copy, child_write_fd);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  // Nothing but stdio and the channel reaches the child, even descriptors the program
  // opened without close-on-exec.
  posix_spawn_file_actions_addclosefrom_np(&setup.actions, child_write_fd + 1);
#endif
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
#if defined(POSIX_SPAWN_CLOEXEC_DEFAULT)
  flags |= POSIX_SPAWN_CLOEXEC_DEFAULT;
#endif
  posix_spawnattr_setflags(&setup.attributes, flags);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&setup.attributes, &none);
  posix_spawnattr_setsigdefault(&setup.attributes, &all);

  const std::string marker = std::string(spawn_marker_variable) + "=" +
                             std::to_string(child_read_fd) + "," + std::to_string(child_write_fd) +
                             ";" + std::string(secret);
  const std::string marker_prefix = std::string(spawn_marker_variable) + "=";
  std::vector<char*> environment;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    if (std::strncmp(*entry, marker_prefix.c_str(), marker_prefix.size()) != 0) {
      environment.push_back(*entry);
    }
  }
  environment.push_back(const_cast<char*>(marker.c_str()));
  environment.push_back(nullptr);
  char* arguments[] = {const_cast<char*>(executable.c_str()), nullptr};

  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, executable.c_str(), &setup.actions, &setup.attributes,
                               arguments, environment.data());
  ::close(read_copy);
  ::close(write_copy);
  const int pidfd = rc == 0 ? open_process_descriptor_locked(pid) : -1;
  guard.reset();  // closing takes the lock itself
  child_end.close();
  if (rc != 0) {
    // glibc reports exec failures here and reaps the failed child itself: no zombie.
    throw start_error("multiproc: could not start " + executable, {rc, std::generic_category()});
  }
  return child(pid, pidfd);
}

channel adopt_inherited_channel(std::string_view token) {
  const auto comma = token.find(',');
  if (comma == std::string_view::npos) return {};
  const int read_fd = std::atoi(std::string(token.substr(0, comma)).c_str());
  const int write_fd = std::atoi(std::string(token.substr(comma + 1)).c_str());
  for (int fd : {read_fd, write_fd}) {
    struct stat info {};
    if (fd < 3 || ::fstat(fd, &info) != 0 || !S_ISFIFO(info.st_mode)) return {};
  }
  for (int fd : {read_fd, write_fd}) {
    // A program this child runs must not inherit its channel.
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    posix::register_descriptor(fd);
  }
  return channel(read_fd, write_fd);
}

bool die_with_parent(long expected_parent) noexcept {
#if defined(__linux__)
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
  // Checked after arming: a parent that died before it would never send the signal.
  return static_cast<long>(::getppid()) == expected_parent;
}

void set_spawn_executable(std::string utf8_path) {
  std::lock_guard<std::mutex> lock(executable_mutex);
  executable_override = std::move(utf8_path);
}

}  // namespace multiproc::detail::os
