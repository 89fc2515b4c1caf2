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
#include <utility>
#include <vector>

#include <multiproc/errors.hpp>

#include "../os/spawn.hpp"
#include "descriptors.hpp"
#include "platform.hpp"

namespace multiproc::detail::os {

namespace {

/// Where the child finds its end of the channel (one socket: both directions).
constexpr int child_channel_fd = 3;

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
  for (char** entry = posix::platform::environment(); entry != nullptr && *entry != nullptr;
       ++entry) {
    if (std::strncmp(*entry, prefix.c_str(), prefix.size()) != 0) environment.push_back(*entry);
  }
  environment.push_back(const_cast<char*>(marker.c_str()));
  environment.push_back(nullptr);
  return environment;
}

}  // namespace

child spawn_child(channel& child_end, std::string_view secret, child_kind /*kind*/) {
  const std::string executable = spawn_program();
  // The copy below is not registered: no fork may happen until it is closed again.
  std::optional<posix::creating_descriptors> guard(std::in_place);
  int channel_copy = -1;
  try {
    channel_copy = high_copy(child_end.read_handle());
  } catch (...) {
    guard.reset();
    child_end.close();
    throw;
  }
  struct closes_copy {
    int& fd;
    ~closes_copy() {
      if (fd >= 0) ::close(fd);
    }
  } copy_closer{channel_copy};
  spawn_setup setup;
  // dup2 clears close-on-exec on the target: 3 is the only descriptor (besides stdio) the new
  // image inherits, at the number the marker names.
  posix_spawn_file_actions_adddup2(&setup.actions, channel_copy, child_channel_fd);
  // Nothing but stdio and the channel reaches the child, even descriptors the program
  // opened without close-on-exec, where the platform can say so.
  posix::platform::add_close_from(&setup.actions, child_channel_fd + 1);
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
                             std::to_string(child_channel_fd) + ";" + std::string(secret);
  std::vector<char*> environment = environment_with(marker);
  char* arguments[] = {const_cast<char*>(executable.c_str()), nullptr};

  // posix_spawn rather than fork+exec: glibc implements it with clone(CLONE_VM | CLONE_VFORK),
  // so nothing of this (possibly huge, possibly threaded) process is copied, and the child runs
  // no code of ours between the fork and the exec; an exec failure comes back as rc.
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, executable.c_str(), &setup.actions, &setup.attributes,
                               arguments, environment.data());
  ::close(std::exchange(channel_copy, -1));
  const int pidfd = rc == 0 ? posix::platform::open_process_descriptor_locked(pid) : -1;
  guard.reset();  // closing takes the lock itself
  child_end.close();
  if (rc != 0) {
    // glibc reports exec failures here and reaps the failed child itself: no zombie.
    throw start_error("multiproc: could not start " + executable, {rc, std::generic_category()});
  }
  return child(pid, pidfd);
}

/// The token is "<fd>" from the marker, and it must be a socket: a stale marker (inherited by
/// an unrelated program) or a forged one names a descriptor that is not ours, and the child
/// must then refuse instead of talking to whatever it is.
channel adopt_inherited_channel(std::string_view token) {
  if (token.empty() || token.find_first_not_of("0123456789") != std::string_view::npos) return {};
  const int fd = std::atoi(std::string(token).c_str());
  struct stat info {};
  if (fd < 3 || ::fstat(fd, &info) != 0 || !S_ISSOCK(info.st_mode)) return {};
  // A program this child runs must not inherit its channel.
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  posix::platform::prepare_socket(fd);
  posix::register_descriptor(fd);
  return channel(fd, fd);
}

bool die_with_parent(long expected_parent) noexcept {
  posix::platform::kill_me_when_parent_dies();
  // Checked after arming: a parent that died before it would never send the signal.
  return static_cast<long>(::getppid()) == expected_parent;
}

void take_parent_name(long expected_parent) noexcept {
  // Its name is read only while it is certainly the parent (not a process that reused its pid).
  if (static_cast<long>(::getppid()) != expected_parent) return;
  posix::platform::take_parent_name(expected_parent);
}

void set_spawn_executable(std::string utf8_path) {
  std::lock_guard<std::mutex> lock(executable_mutex);
  executable_override = std::move(utf8_path);
}

}  // namespace multiproc::detail::os
