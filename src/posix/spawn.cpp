// POSIX spawn: posix_spawn of this program's own image with exactly stdio and the child's
// channel (at descriptors 3 and 4) inherited, signals reset, the marker in its environment.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <multiproc/errors.hpp>

#include "../os/spawn.hpp"
#include "descriptors.hpp"
#include "platform.hpp"

extern char** environ;

namespace multiproc::detail::os {

namespace {

constexpr int child_read_fd = 3;
constexpr int child_write_fd = 4;

std::mutex executable_mutex;
std::string executable_override;  // guarded by executable_mutex; empty: this program's image

std::string spawn_program() {
  {
    std::lock_guard<std::mutex> lock(executable_mutex);
    if (!executable_override.empty()) return executable_override;
  }
  return posix::platform::executable_path();
}

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
  spawn_setup(const spawn_setup&) = delete;
  spawn_setup& operator=(const spawn_setup&) = delete;
};

/// A close-on-exec copy at 10 or above, so the dup2 onto 3 and 4 never overwrites a source.
int high_copy(native_handle fd) {
  const int copy = ::fcntl(static_cast<int>(fd), F_DUPFD_CLOEXEC, 10);
  if (copy < 0)
    throw start_error("multiproc: could not prepare the child's channel",
                      {errno, std::generic_category()});
  return copy;
}

/// This process's environment without any marker of its own, plus `marker`.
std::vector<char*> environment_with(const std::string& marker) {
  const std::string prefix = std::string(spawn_marker_variable) + "=";
  std::vector<char*> environment;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    if (std::strncmp(*entry, prefix.c_str(), prefix.size()) != 0) environment.push_back(*entry);
  }
  environment.push_back(const_cast<char*>(marker.c_str()));
  environment.push_back(nullptr);
  return environment;
}

}  // namespace

child spawn_child(channel& child_end, std::string_view secret, child_kind /*kind*/) {
  const std::string executable = spawn_program();
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
  // dup2 clears close-on-exec on the target: 3 and 4 are the only descriptors (besides
  // stdio) the new image inherits, at numbers the marker names.
  posix_spawn_file_actions_adddup2(&setup.actions, read_copy, child_read_fd);
  posix_spawn_file_actions_adddup2(&setup.actions, write_copy, child_write_fd);
  // Nothing but stdio and the channel reaches the child, even descriptors the program
  // opened without close-on-exec, where the platform can say so.
  posix::platform::add_close_from(&setup.actions, child_write_fd + 1);
  // A clean start: no blocked signal, every disposition back to its default.
  posix_spawnattr_setflags(&setup.attributes,
                           static_cast<short>(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                              posix::platform::extra_spawn_flags()));
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&setup.attributes, &none);
  posix_spawnattr_setsigdefault(&setup.attributes, &all);

  const std::string marker = std::string(spawn_marker_variable) + "=" +
                             std::to_string(child_read_fd) + "," + std::to_string(child_write_fd) +
                             ";" + std::string(secret);
  std::vector<char*> environment = environment_with(marker);
  char* arguments[] = {const_cast<char*>(executable.c_str()), nullptr};

  // posix_spawn rather than fork+exec: glibc implements it with clone(CLONE_VM | CLONE_VFORK),
  // so nothing of this (possibly huge, possibly threaded) process is copied, and the child runs
  // no code of ours between the fork and the exec; an exec failure comes back as rc.
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, executable.c_str(), &setup.actions, &setup.attributes,
                               arguments, environment.data());
  ::close(read_copy);
  ::close(write_copy);
  const int pidfd = rc == 0 ? posix::platform::open_process_descriptor_locked(pid) : -1;
  guard.reset();  // closing takes the lock itself
  child_end.close();
  if (rc != 0) {
    // glibc reports exec failures here and reaps the failed child itself: no zombie.
    throw start_error("multiproc: could not start " + executable, {rc, std::generic_category()});
  }
  return child(pid, pidfd);
}

/// The token is "<read fd>,<write fd>" from the marker. Both must be pipes: a stale marker
/// (inherited by an unrelated program) or a forged one names descriptors that are not ours,
/// and the child must then refuse instead of talking to whatever they are.
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
  posix::platform::kill_me_when_parent_dies();
  // Checked after arming: a parent that died before it would never send the signal.
  return static_cast<long>(::getppid()) == expected_parent;
}

void set_spawn_executable(std::string utf8_path) {
  std::lock_guard<std::mutex> lock(executable_mutex);
  executable_override = std::move(utf8_path);
}

}  // namespace multiproc::detail::os
