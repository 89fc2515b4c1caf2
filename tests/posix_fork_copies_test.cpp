// What a child of mp::fork() does with the library objects it inherited from its parent:
// their descriptors were closed at the fork, so destroying the copies must not close the
// numbers again (they may be the child's own files by then); an object started in the child
// belongs to the child.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "../src/os/channel.hpp"
#include "support.hpp"

namespace mp = multiproc;
namespace core_os = multiproc::detail::os;
using namespace std::chrono_literals;

namespace {

void sleep_ms(int milliseconds) {
  std::this_thread::sleep_for(std::chrono::milliseconds(milliseconds));
}

void sleep_then_touch(int milliseconds, std::string path) {
  std::this_thread::sleep_for(std::chrono::milliseconds(milliseconds));
  std::ofstream(path) << "done\n";
}

long worker_pid(int) {
  return mp::this_process::id();
}

int twice(int x) {
  return 2 * x;
}

/// Waits for a child of mp::fork() and returns its exit status (-1 if it did not exit).
int exit_status_of(long pid) {
  int status = 0;
  if (::waitpid(static_cast<pid_t>(pid), &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// In a forked child: opens files until they take the lowest free numbers (those the fork
/// clean-up freed), runs `drop`, and exits 0 only if every file is still open.
template <class Drop>
[[noreturn]] void check_files_survive(Drop drop) {
  std::vector<int> files;
  for (int i = 0; i < 16; ++i)
    files.push_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  drop();
  int closed = 0;
  for (int fd : files) {
    if (fd < 0 || ::fcntl(fd, F_GETFD) == -1) ++closed;
  }
  ::_exit(closed == 0 ? 0 : 10 + closed);
}

}  // namespace

using posix_fork_copies = multiproc_test::checked;

TEST_F(posix_fork_copies, inherited_process_object_never_closes_the_childs_files) {
  for (const auto method : multiproc_test::available_methods()) {
    auto running = std::make_unique<mp::process>(method, sleep_ms, 300);
    running->start();  // holds a pidfd (and, for spawn, nothing else once started)
    const long pid = mp::fork();
    if (pid == 0) check_files_survive([&] { running.reset(); });
    EXPECT_EQ(exit_status_of(pid), 0) << "the copy closed files the child opened after the fork";
    running->join();
    EXPECT_EQ(running->exitcode(), 0);
  }
}

TEST_F(posix_fork_copies, inherited_pool_object_never_closes_the_childs_files) {
  MULTIPROC_SKIP_FORK_POOLS_WHEN_SANITIZED();
  for (const auto method : multiproc_test::pool_methods()) {
    std::optional<mp::pool> pool(mp::pool_options{2, {}, 0, method});
    ASSERT_EQ(pool->apply(twice, 21), 42);
    const long pid = mp::fork();
    if (pid == 0) check_files_survive([&] { pool.reset(); });
    EXPECT_EQ(exit_status_of(pid), 0) << "the copy closed files the child opened after the fork";
    EXPECT_EQ(pool->apply(twice, 4), 8);  // the parent's pool is untouched
  }
}

TEST_F(posix_fork_copies, inherited_objects_never_close_what_the_library_opens_in_the_child) {
  MULTIPROC_SKIP_FORK_POOLS_WHEN_SANITIZED();
  MULTIPROC_SKIP_THREADS_AFTER_FORK_UNDER_TSAN();  // the child makes a pool after mp::fork()
  // The child's own pool takes the lowest free numbers, i.e. those the fork clean-up freed:
  // destroying the inherited objects (a process's pidfd, a pool copy) must leave its pipes
  // alone, or that pool would lose its worker.
  for (const auto method : multiproc_test::pool_methods()) {
    auto running = std::make_unique<mp::process>(method, sleep_ms, 300);
    running->start();
    std::optional<mp::pool> inherited_pool(mp::pool_options{1, {}, 0, method});
    ASSERT_EQ(inherited_pool->apply(twice, 1), 2);
    const long pid = mp::fork();
    if (pid == 0) {
      int code = 0;
      {
        mp::pool own(mp::pool_options{1, {}, 0, method});
        const long worker = own.apply(worker_pid, 0);
        running.reset();
        inherited_pool.reset();
        try {
          for (int i = 0; i < 20; ++i) {
            if (own.apply(twice, i) != 2 * i) code = 3;
          }
          // The same worker still serves: its channel was never closed under it (a pool
          // recovers by starting another worker, which would hide the damage).
          if (own.apply(worker_pid, 0) != worker) code = 5;
        } catch (...) {
          code = 4;
        }
      }
      ::_exit(code);
    }
    EXPECT_EQ(exit_status_of(pid), 0)
        << "destroying inherited objects broke a pool the child made after the fork";
    running->join();
    EXPECT_EQ(inherited_pool->apply(twice, 5), 10);
  }
}

TEST_F(posix_fork_copies, inherited_channels_never_close_the_childs_new_channels) {
  // At the seam, where the numbers are sure to be reused: the child's new channels take the
  // lowest free numbers, which are exactly those of the inherited channels its clean-up
  // closed; destroying the inherited objects afterwards must leave the new ones working.
  auto inherited =
      std::make_unique<std::pair<core_os::channel, core_os::channel>>(core_os::make_channel_pair());
  const long pid = mp::fork();
  if (pid == 0) {
    auto fresh = core_os::make_channel_pair();
    inherited.reset();
    int code = 0;
    try {
      fresh.first.write_all("ping", 4);
      char got[4] = {};
      std::size_t have = 0;
      while (have < 4) {
        const std::size_t n = fresh.second.read_some(got + have, 4 - have);
        if (n == 0) break;
        have += n;
      }
      if (have != 4 || std::string(got, 4) != "ping") code = 2;
    } catch (...) {
      code = 3;  // EBADF: an inherited object closed a number the new channel holds
    }
    ::_exit(code);
  }
  EXPECT_EQ(exit_status_of(pid), 0) << "an inherited channel closed the child's new channel";
}

TEST_F(posix_fork_copies, process_made_before_the_fork_and_started_in_the_child_is_joined_there) {
  const std::string marker = multiproc_test::temporary_path("started-in-fork-child");
  mp::process p(mp::start_method::fork, sleep_then_touch, 200, marker);
  const long pid = mp::fork();
  if (pid == 0) {
    {
      mp::process mine(std::move(p));
      mine.start();
    }  // this process started it: leaving the scope joins it
    ::_exit(::access(marker.c_str(), F_OK) == 0 ? 0 : 2);
  }
  EXPECT_EQ(exit_status_of(pid), 0) << "the destructor in the fork child did not join the "
                                       "process started there";
  ::unlink(marker.c_str());
}
