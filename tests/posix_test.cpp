// POSIX-only behaviour: mp::fork, coexistence with the program's own children and SIGCHLD
// handler, descriptor hygiene of spawned children, start failures with their errno.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "../src/core/forkserver.hpp"
#include "../src/core/protocol/frame.hpp"
#include "../src/core/protocol/hello.hpp"
#include "support.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

std::vector<int> open_descriptors() {
  std::vector<int> fds;
  // /dev/fd lists this process's descriptors on Linux (a link to /proc/self/fd) and on macOS.
  DIR* dir = ::opendir("/dev/fd");
  const int own = ::dirfd(dir);
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    const int fd = std::atoi(entry->d_name);
    if (fd != own) fds.push_back(fd);
  }
  ::closedir(dir);
  std::sort(fds.begin(), fds.end());
  return fds;
}

/// Exits with how many descriptors above stdio this process holds besides `allowed`.
void exit_with_foreign_descriptor_count(std::vector<int> allowed) {
  int foreign = 0;
  for (int fd : open_descriptors()) {
    if (fd > 2 && std::find(allowed.begin(), allowed.end(), fd) == allowed.end()) ++foreign;
  }
  std::exit(foreign);
}

/// The descriptors a spawned child may hold besides stdio and its channel. Where spawn closes
/// everything else (Linux: posix_spawn_file_actions_addclosefrom_np; macOS:
/// POSIX_SPAWN_CLOEXEC_DEFAULT), none. The portable POSIX build on Linux has neither: there a
/// child inherits what the program itself left without close-on-exec, as with any exec, and
/// the test holds the library to its part -- every descriptor of its own is close-on-exec.
std::vector<int> inherited_anyway() {
  std::vector<int> left;
#if defined(MULTIPROC_TEST_POSIX_PORTABLE) && !defined(__APPLE__)
  for (int fd : open_descriptors()) {
    if (fd > 2 && (::fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0) left.push_back(fd);
  }
#endif
  return left;
}

std::vector<int> worker_descriptors(int) {
  return open_descriptors();
}

using posix_coexistence = multiproc_test::checked;
using posix_fork = multiproc_test::checked;
using posix_resources = multiproc_test::checked;
using posix_spawn_hygiene = multiproc_test::checked;
using posix_start_errors = multiproc_test::checked;
using posix_this_process = multiproc_test::checked;

TEST_F(posix_fork, returns_zero_in_the_child_and_the_pid_in_the_parent) {
  const long pid = mp::fork();
  if (pid == 0) ::_exit(mp::this_process::parent_id() > 0 ? 23 : 1);
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(static_cast<pid_t>(pid), &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 23);
}

TEST_F(posix_fork, child_holds_no_descriptor_of_a_pool) {
  MULTIPROC_SKIP_FORK_POOLS_WHEN_SANITIZED();
  mp::pool pool(mp::pool_options{1, {}, 0, mp::start_method::fork});
  EXPECT_EQ(pool.apply([](int x) { return x; }, 1), 1);
  const auto parent_fds = open_descriptors();
  const long pid = mp::fork();
  if (pid == 0) {
    // Only what the program opened itself may remain; the pool's pipes and pidfds are closed.
    const auto fds = open_descriptors();
    ::_exit(fds.size() < parent_fds.size() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(static_cast<pid_t>(pid), &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

std::atomic<int> sigchld_seen{0};
void count_sigchld(int) {
  ++sigchld_seen;
}

TEST_F(posix_coexistence, own_sigchld_handler_and_own_waitpid_keep_working) {
  struct sigaction action {};
  struct sigaction previous {};
  action.sa_handler = count_sigchld;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ASSERT_EQ(::sigaction(SIGCHLD, &action, &previous), 0);
  sigchld_seen = 0;

  const pid_t own = ::fork();
  if (own == 0) ::_exit(5);
  for (auto method : multiproc_test::pool_methods()) {
    mp::process p(
        method, [](int code) { std::exit(code); }, 9);
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), 9);
    mp::pool pool(mp::pool_options{1, {}, 0, method});
    EXPECT_EQ(pool.apply([](int x) { return x + 1; }, 1), 2);
  }
  int status = 0;
  EXPECT_EQ(::waitpid(own, &status, 0), own);  // the library never reaped it
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 5);
  EXPECT_GT(sigchld_seen.load(), 0);
  ::sigaction(SIGCHLD, &previous, nullptr);
}

TEST_F(posix_spawn_hygiene, child_gets_only_stdio_and_its_channel) {
  // A descriptor the program opened without close-on-exec must not reach the child, nor any of
  // the library's: a pool's channels and a queue's memory and holder sockets are open.
  const int leaky = ::dup(0);
  ASSERT_GE(leaky, 0);
  mp::pool busy(mp::pool_options{2, {}, 0, mp::start_method::spawn});
  EXPECT_EQ(busy.apply(worker_descriptors, 0).empty(), false);
  mp::queue<int> queue;
  queue.put(1);
  const std::vector<int> allowed = inherited_anyway();
  mp::process p(mp::start_method::spawn, exit_with_foreign_descriptor_count, allowed);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0) << "the spawned child held descriptors besides stdio";
  mp::pool pool(mp::pool_options{1, {}, 0, mp::start_method::spawn});
  std::vector<int> expected{0, 1, 2, 3};
  for (int fd : allowed) {
    if (fd != 3) expected.push_back(fd);  // 3 is the worker's channel, whatever it was here
  }
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(pool.apply(worker_descriptors, 0), expected);
  EXPECT_EQ(queue.get(), 1);
  ::close(leaky);
}

TEST_F(posix_start_errors, unexecutable_file_is_a_start_error_with_eacces) {
  const std::string path = multiproc_test::temporary_path("not-executable");
  { std::ofstream(path) << "not a program\n"; }
  ::chmod(path.c_str(), 0600);
  const auto before = multiproc_test::count_resources();
  mp::set_executable(path);
  mp::process p(mp::start_method::spawn, [] {});
  try {
    p.start();
    ADD_FAILURE() << "start() should have failed";
  } catch (const mp::start_error& e) {
    EXPECT_EQ(e.code(), std::errc::permission_denied) << e.what();
  }
  EXPECT_THROW(mp::pool(mp::pool_options{1, {}, 0, mp::start_method::spawn}), mp::start_error);
  mp::set_executable("");
  std::remove(path.c_str());
  EXPECT_TRUE(multiproc_test::same_resources(before));
}

TEST_F(posix_start_errors, exhausted_descriptors_are_a_start_error_with_emfile) {
  const auto before = multiproc_test::count_resources();
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  // The limit at the lowest free descriptor: every lower one is taken, so no new one can be had.
  int lowest_free = 0;
  for (int fd : open_descriptors()) {
    if (fd != lowest_free) break;
    ++lowest_free;
  }
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(lowest_free);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &tight), 0);
  for (auto method : multiproc_test::pool_methods()) {
    try {
      mp::pool pool(mp::pool_options{1, {}, 0, method});
      ADD_FAILURE() << "the pool should not start without descriptors";
    } catch (const mp::start_error& e) {
      EXPECT_EQ(e.code(), std::errc::too_many_files_open) << e.what();
    }
  }
  {
    mp::process p(mp::start_method::spawn, [] {});
    try {
      p.start();
      ADD_FAILURE() << "spawn should not start without descriptors";
    } catch (const mp::start_error& e) {
      EXPECT_EQ(e.code(), std::errc::too_many_files_open) << e.what();
    }
  }
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  EXPECT_TRUE(multiproc_test::same_resources(before));
}

/// What a hand-started copy of the test binary did with one hello.
struct hello_outcome {
  int status = -1;      ///< waitpid status
  std::string printed;  ///< everything the child wrote to its stderr
};

/// Starts the test binary as a spawned child would be started: its end of a socketpair on 3,
/// the marker carrying `marker_secret`; sends `hello` (whole frames), shuts the channel down,
/// and collects the child's stderr and status. The helper's other ends never reach the child.
hello_outcome run_with_hello(const std::string& marker_secret, const std::string& hello) {
  hello_outcome outcome;
  int channel[2], errors[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0 ||
      ::pipe2(errors, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "socketpair/pipe2: " << std::strerror(errno);
    return outcome;
  }
  // Prepared before fork: the child only moves descriptors and executes.
  std::vector<std::string> variables;
  for (char** v = environ; *v != nullptr; ++v) {
    if (std::strncmp(*v, "MULTIPROC_SPAWNED=", 18) != 0) variables.emplace_back(*v);
  }
  variables.push_back("MULTIPROC_SPAWNED=3;" + marker_secret);
  std::vector<char*> envp;
  for (auto& v : variables)
    envp.push_back(v.data());
  envp.push_back(nullptr);
  char name[] = "multiproc_tests";
  char* argv[] = {name, nullptr};
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Above every target first (F_DUPFD clears close-on-exec), so no dup2 clobbers a source.
    const int own = ::fcntl(channel[1], F_DUPFD, 10);
    const int err = ::fcntl(errors[1], F_DUPFD, 10);
    if (own < 0 || err < 0 || ::dup2(own, 3) != 3 || ::dup2(err, 2) != 2) ::_exit(127);
    ::close(own);
    ::close(err);
    ::execve("/proc/self/exe", argv, envp.data());
    ::_exit(127);
  }
  ::close(channel[1]);
  ::close(errors[1]);
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
  } else {
    EXPECT_EQ(::send(channel[0], hello.data(), hello.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(hello.size()));
  }
  ::shutdown(channel[0], SHUT_WR);  // end of the channel: a child that accepted the hello sees it
  if (pid > 0) {
    // Its stderr until it closes (it exits); 30 s is only a hang guard.
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    char buffer[4096];
    for (;;) {
      pollfd watch{errors[0], POLLIN, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || ::poll(&watch, 1, static_cast<int>(left.count())) == 0) {
        ADD_FAILURE() << "the child neither exited nor closed its stderr within 30 s";
        ::kill(pid, SIGKILL);
        break;
      }
      const ssize_t n = ::read(errors[0], buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      outcome.printed.append(buffer, static_cast<std::size_t>(n));
    }
    EXPECT_EQ(::waitpid(pid, &outcome.status, 0), pid);
  }
  ::close(channel[0]);
  ::close(errors[0]);
  return outcome;
}

bool exited_with(int status, int code) {
  return WIFEXITED(status) && WEXITSTATUS(status) == code;
}

const std::string marker_secret = "0123456789abcdef0123456789abcdef";

TEST_F(posix_spawn_hygiene, forged_secret_is_refused) {
  // The test binary itself, started with a valid channel and a hello that is right in every
  // part (protocol marker, this image's identity, this parent) except the secret: it must
  // refuse to act as a child, say why, and exit 86.
  std::string hello;
  mp::detail::append_hello(hello, "11111111111111111111111111111111",
                           mp::detail::child_role::process);
  const auto outcome = run_with_hello(marker_secret, hello);
  EXPECT_TRUE(exited_with(outcome.status, mp::detail::protocol_failure_exit_code))
      << "status " << outcome.status << "; stderr: " << outcome.printed;
  EXPECT_NE(outcome.printed.find("start-up secret does not match"), std::string::npos)
      << outcome.printed;
}

TEST_F(posix_spawn_hygiene, right_secret_is_accepted) {
  // The positive control: the same hello with the marker's secret gets past the start-up
  // proof; the child then waits for its call, finds the channel closed, and says so.
  std::string hello;
  mp::detail::append_hello(hello, marker_secret, mp::detail::child_role::process);
  const auto outcome = run_with_hello(marker_secret, hello);
  EXPECT_TRUE(exited_with(outcome.status, mp::detail::protocol_failure_exit_code))
      << "status " << outcome.status << "; stderr: " << outcome.printed;
  EXPECT_EQ(outcome.printed.find("secret does not match"), std::string::npos) << outcome.printed;
  EXPECT_NE(outcome.printed.find("closed the channel before sending the call"), std::string::npos)
      << outcome.printed;
}

TEST_F(posix_spawn_hygiene, other_image_identity_is_refused) {
  // The right secret but another program's identity: the handshake refuses it.
  std::string hello;
  const std::size_t at = mp::detail::begin_frame(hello, mp::detail::frame_kind::hello, 0);
  mp::detail::append_string(
      hello, std::string_view(mp::detail::hello_magic, sizeof mp::detail::hello_magic));
  mp::detail::append_string(hello, marker_secret);
  mp::detail::append_string(hello, "some-other-program");
  mp::detail::append_u64(hello, static_cast<std::uint64_t>(::getpid()));
  hello.push_back(0);
  mp::detail::end_frame(hello, at);
  const auto outcome = run_with_hello(marker_secret, hello);
  EXPECT_TRUE(exited_with(outcome.status, mp::detail::protocol_failure_exit_code))
      << "status " << outcome.status << "; stderr: " << outcome.printed;
  EXPECT_NE(outcome.printed.find("different program image"), std::string::npos) << outcome.printed;
}

/// Sockets this process holds above stdio (a channel is one socket).
int sockets_above_stdio(int) {
  int sockets = 0;
  for (int fd : open_descriptors()) {
    if (fd <= 2) continue;
    struct stat facts {};
    if (::fstat(fd, &facts) == 0 && S_ISSOCK(facts.st_mode)) ++sockets;
  }
  return sockets;
}

TEST_F(posix_fork, each_forked_worker_holds_only_its_own_channel) {
  MULTIPROC_SKIP_FORK_POOLS_WHEN_SANITIZED();
  // Workers are forked by several supervisor threads while others create channels: none may
  // hold another worker's channel (it would hide that worker's death). The fork server's link
  // (a socket of the library's, which forked workers do not inherit) is closed first.
  mp::detail::stop_forkserver();
  const int own = sockets_above_stdio(0);  // sockets the program (or its runner) opened itself
  for (int round = 0; round < 3; ++round) {
    mp::pool pool(mp::pool_options{8, {}, 0, mp::start_method::fork});
    const auto counts = pool.map(sockets_above_stdio, std::vector<int>(64, 0), 1);
    for (int count : counts)
      EXPECT_EQ(count, own + 1);
  }
}

#if defined(__linux__)
/// Exits 3 unless this process's command name (as ps shows it) is `expected`.
void exit_3_unless_named(std::string expected) {
  std::ifstream comm("/proc/self/comm");
  std::string name;
  std::getline(comm, name);
  if (name != expected) std::_Exit(3);
}

// A child is named as its parent on every start method, as a forked one is: not "exe" (the
// kernel's name for an image run as /proc/self/exe, which spawn and the fork server's own
// start do).
TEST_F(posix_this_process, a_child_has_its_parents_command_name) {
#if defined(MULTIPROC_TEST_POSIX_PORTABLE)
  GTEST_SKIP() << "the portable POSIX build keeps the name the image's path gives";
#endif
  std::ifstream comm("/proc/self/comm");
  std::string own;
  std::getline(comm, own);
  ASSERT_FALSE(own.empty());
  for (auto method : multiproc_test::pool_methods()) {
    mp::process p(method, exit_3_unless_named, own);
    p.start();
    ASSERT_TRUE(p.join(30s));
    EXPECT_EQ(p.exitcode(), 0) << "method " << static_cast<int>(method)
                               << ": the child is not named " << own;
  }
}
#endif

#if defined(__linux__)
TEST_F(posix_this_process, cpu_count_is_the_affinity_mask) {
#if defined(MULTIPROC_TEST_POSIX_PORTABLE)
  GTEST_SKIP() << "the portable POSIX build counts CPUs with sysconf, not the affinity mask";
#endif
  // As os.process_cpu_count(): the CPUs this process may run on, not those the machine has.
  cpu_set_t saved;
  ASSERT_EQ(::sched_getaffinity(0, sizeof saved, &saved), 0);
  EXPECT_EQ(mp::cpu_count(), static_cast<unsigned>(CPU_COUNT(&saved)));
  // Narrowed to one CPU (this thread only, restored below), the count follows.
  int first = 0;
  while (!CPU_ISSET(first, &saved))
    ++first;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ASSERT_EQ(::sched_setaffinity(0, sizeof one, &one), 0);
  const unsigned narrowed = mp::cpu_count();
  ASSERT_EQ(::sched_setaffinity(0, sizeof saved, &saved), 0);
  EXPECT_EQ(narrowed, 1u);
}
#endif

TEST_F(posix_resources, shared_blocks_are_counted) {
#if defined(__linux__)
  // The leak checks see the library's memfds, held as descriptors and as mappings.
  const auto before = multiproc_test::count_resources();
  const int fd = ::memfd_create("multiproc-payload", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  void* data = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(data, MAP_FAILED);
  const auto held = multiproc_test::count_resources();
  EXPECT_EQ(held.shared_block_descriptors, before.shared_block_descriptors + 1);
  EXPECT_EQ(held.shared_block_mappings, before.shared_block_mappings + 1);
  ::close(fd);
  const auto mapped = multiproc_test::count_resources();
  EXPECT_EQ(mapped.shared_block_descriptors, before.shared_block_descriptors);
  EXPECT_EQ(mapped.shared_block_mappings, before.shared_block_mappings + 1);
  EXPECT_FALSE(multiproc_test::same_resources(before, std::chrono::seconds(0)));
  ::munmap(data, 4096);
  EXPECT_TRUE(multiproc_test::same_resources(before));
#else
  GTEST_SKIP() << "shared blocks are memfds on Linux only";
#endif
}

}  // namespace
