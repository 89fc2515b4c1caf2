// POSIX-only behaviour: mp::fork, coexistence with the program's own children and SIGCHLD
// handler, descriptor hygiene of spawned children, start failures with their errno.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

std::vector<int> open_descriptors() {
  std::vector<int> fds;
  DIR* dir = ::opendir("/proc/self/fd");
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

void exit_with_foreign_descriptor_count() {
  int foreign = 0;
  for (int fd : open_descriptors()) {
    if (fd > 2) ++foreign;
  }
  std::exit(foreign);
}

std::vector<int> worker_descriptors(int) {
  return open_descriptors();
}

TEST(posix_fork, returns_zero_in_the_child_and_the_pid_in_the_parent) {
  const long pid = mp::fork();
  if (pid == 0) ::_exit(mp::this_process::parent_id() > 0 ? 23 : 1);
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(static_cast<pid_t>(pid), &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 23);
}

TEST(posix_fork, child_holds_no_descriptor_of_a_pool) {
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

TEST(posix_coexistence, own_sigchld_handler_and_own_waitpid_keep_working) {
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

TEST(posix_spawn_hygiene, child_gets_only_stdio_and_its_channel) {
  // A descriptor the program opened without close-on-exec must not reach the child.
  const int leaky = ::dup(0);
  ASSERT_GE(leaky, 0);
  mp::process p(mp::start_method::spawn, exit_with_foreign_descriptor_count);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0) << "the spawned child held descriptors besides stdio";
  mp::pool pool(mp::pool_options{1, {}, 0, mp::start_method::spawn});
  EXPECT_EQ(pool.apply(worker_descriptors, 0), (std::vector<int>{0, 1, 2, 3, 4}));
  ::close(leaky);
}

TEST(posix_start_errors, unexecutable_file_is_a_start_error_with_eacces) {
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

TEST(posix_start_errors, exhausted_descriptors_are_a_start_error_with_emfile) {
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

TEST(posix_spawn_hygiene, forged_secret_is_refused) {
  // The test binary itself, started with a valid channel but a hello carrying another
  // secret than its marker: it must refuse to act as a worker and exit 86.
  int to_child[2], from_child[2];
  ASSERT_EQ(::pipe(to_child), 0);
  ASSERT_EQ(::pipe(from_child), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(to_child[0], 3);
    ::dup2(from_child[1], 4);
    ::setenv("MULTIPROC_SPAWNED", "3,4;00000000000000000000000000000000", 1);
    ::execl("/proc/self/exe", "multiproc_tests", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  // A hello frame with a different secret: header, then magic, secret, identity, pid, role.
  auto put32 = [](std::string& s, std::uint32_t v) { s.append(reinterpret_cast<char*>(&v), 4); };
  std::string body;
  put32(body, 8);
  body += "MPROC001";
  put32(body, 32);
  body += "11111111111111111111111111111111";
  put32(body, 0);
  const std::uint64_t parent = static_cast<std::uint64_t>(::getpid());
  body.append(reinterpret_cast<const char*>(&parent), 8);
  body.push_back(0);
  std::string frame(24, '\0');
  const auto size = static_cast<std::uint32_t>(body.size());
  std::memcpy(frame.data(), &size, 4);
  frame[4] = 1;  // hello
  frame += body;
  ASSERT_EQ(::write(to_child[1], frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ::close(to_child[1]);
  ::close(from_child[0]);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 86);
}

int pipes_above_stdio(int) {
  int pipes = 0;
  for (int fd : open_descriptors()) {
    if (fd <= 2) continue;
    char target[64] = {};
    const std::string link = "/proc/self/fd/" + std::to_string(fd);
    if (::readlink(link.c_str(), target, sizeof target - 1) > 0 &&
        std::string(target).rfind("pipe:", 0) == 0) {
      ++pipes;
    }
  }
  return pipes;
}

TEST(posix_fork, each_forked_worker_holds_only_its_own_channel) {
  MULTIPROC_SKIP_FORK_POOLS_WHEN_SANITIZED();
  // Workers are forked by several supervisor threads while others create pipes: none may
  // hold another worker's pipe (it would hide that worker's death).
  const int own = pipes_above_stdio(0);  // pipes the program (or its runner) opened itself
  for (int round = 0; round < 3; ++round) {
    mp::pool pool(mp::pool_options{8, {}, 0, mp::start_method::fork});
    const auto counts = pool.map(pipes_above_stdio, std::vector<int>(64, 0), 1);
    for (int count : counts)
      EXPECT_EQ(count, own + 2);
  }
}

std::size_t status_kib(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(status, line)) {
    if (line.rfind(prefix, 0) == 0) return std::stoul(line.substr(prefix.size()));
  }
  return 0;
}

std::vector<char> add_one_per_page(std::vector<char> v) {
  for (std::size_t i = 0; i < v.size(); i += 4096)
    v[i] = static_cast<char>(v[i] + 1);
  return v;
}

/// Runs in a fresh child (its own peak-memory mark): a 256 MiB argument and result through a
/// pool, then exits 0 if the peak stayed within the user's own copies plus one in transit.
void measure_quarter_gigabyte_round_trip(int method) {
  constexpr std::size_t size = 256u << 20;
  const std::size_t base_kib = status_kib("VmRSS");
  mp::pool pool(mp::pool_options{1, {}, 0, static_cast<mp::start_method>(method)});
  std::vector<char> big(size, 1);
  const auto back = pool.apply(add_one_per_page, big);
  const std::size_t peak_kib = status_kib("VmHWM");
  if (back.size() != size || back[0] != 2) std::exit(2);
  // big + back are the user's; the transport may add about one more copy at a time.
  const double copies = static_cast<double>(peak_kib - base_kib) * 1024.0 / size;
  std::printf("peak: %.2f copies of the payload\n", copies);
  std::fflush(stdout);
  std::exit(copies <= 3.3 ? 0 : 1);
}

TEST(posix_memory, large_payload_costs_about_one_copy_in_transit) {
#if defined(MULTIPROC_TEST_SANITIZED)
  GTEST_SKIP() << "a sanitizer's allocator changes what peak memory means";
#endif
  for (auto method : multiproc_test::pool_methods()) {
    mp::process p(mp::start_method::spawn, measure_quarter_gigabyte_round_trip,
                  static_cast<int>(method));
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), 0) << "the parent's peak memory exceeded its two copies plus one";
  }
}

}  // namespace
