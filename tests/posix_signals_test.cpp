// Signals (issue 9 item 6): a handler installed without SA_RESTART and fired every 10 ms at
// the calling thread and at the whole process (so the library's own threads get some too)
// while a process is joined and a pool runs a 16 MiB apply, a map and an imap: no result
// changes and no spurious error (every interrupted system call is resumed). POSIX only.
#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#if defined(_WIN32)
TEST(posix_signals, not_on_windows) {
  GTEST_SKIP() << "POSIX signals";
}
#else
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

std::atomic<long> deliveries{0};
void count_delivery(int) {
  deliveries.fetch_add(1, std::memory_order_relaxed);
}

/// While alive: SIGUSR1 (handler without SA_RESTART) every 10 ms, alternately at `target`
/// and at the whole process. Restores the previous disposition on destruction.
class signal_storm {
 public:
  explicit signal_storm(pthread_t target) : target_(target) {
    struct sigaction action {};
    action.sa_handler = count_delivery;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: blocking calls see EINTR
    sigaction(SIGUSR1, &action, &previous_);
    firing_ = std::thread([this] {
      bool at_thread = true;
      while (!stop_.load()) {
        if (at_thread) {
          pthread_kill(target_, SIGUSR1);
        } else {
          kill(getpid(), SIGUSR1);
        }
        at_thread = !at_thread;
        std::this_thread::sleep_for(10ms);  // the storm's pace, not synchronisation
      }
    });
  }
  ~signal_storm() {
    stop_ = true;
    firing_.join();
    sigaction(SIGUSR1, &previous_, nullptr);
  }
  signal_storm(const signal_storm&) = delete;
  signal_storm& operator=(const signal_storm&) = delete;

 private:
  pthread_t target_;
  struct sigaction previous_ {};
  std::atomic<bool> stop_{false};
  std::thread firing_;
};

int sleepy_square(int x) {
  std::this_thread::sleep_for(1ms);
  return x * x;
}
std::size_t sum_of_bytes(std::vector<unsigned char> bytes) {
  return std::accumulate(bytes.begin(), bytes.end(), std::size_t{0});
}
void sleep_for_ever() {
  for (;;)
    std::this_thread::sleep_for(1h);
}
void exit_three() {
  std::_Exit(3);
}
void nap_then_exit(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  std::_Exit(5);
}

std::atomic<bool> interrupted{false};
void note_interrupt(int) {
  interrupted = true;
}
bool file_exists(const std::string& path) {
  return std::ifstream(path).good();
}
/// Item 0 says it started (a file), then waits (bounded) for the test's go-ahead; every item
/// returns its square.
int gate_then_square(std::pair<int, std::string> item) {
  if (item.first == 0) {
    std::ofstream(item.second + "-started") << "started";
    for (int i = 0; i < 3000 && !file_exists(item.second + "-go"); ++i) {
      std::this_thread::sleep_for(10ms);  // a hang guard's pace: the test makes the file
    }
  }
  return item.first * item.first;
}
/// A program with a pool, in its own process group as a shell would start it, that handles
/// SIGINT itself: exits 0 if its map came back whole and the interrupt reached it, 2 if a
/// worker was lost, 3 if the interrupt never came.
void program_with_a_pool(std::string gate, int method) {
  ::setpgid(0, 0);
  struct sigaction on_interrupt {};
  on_interrupt.sa_handler = note_interrupt;
  sigemptyset(&on_interrupt.sa_mask);
  ::sigaction(SIGINT, &on_interrupt, nullptr);
  std::vector<std::pair<int, std::string> > items;
  for (int i = 0; i < 10; ++i)
    items.emplace_back(i, gate);
  try {
    mp::pool pool(mp::pool_options{2, {}, 0, static_cast<mp::start_method>(method)});
    const std::vector<int> squares = pool.map(gate_then_square, items, 1);
    for (int i = 0; i < 10; ++i) {
      if (squares[i] != i * i) std::_Exit(4);
    }
  } catch (const mp::worker_lost&) {
    std::_Exit(2);
  }
  std::_Exit(interrupted ? 0 : 3);
}

class posix_signals : public multiproc_test::method_test {};

}  // namespace

TEST_P(posix_signals, interrupted_calls_are_resumed_everywhere) {
  deliveries = 0;
  mp::pool pool(options(2));
  const signal_storm storm(pthread_self());

  mp::process child(GetParam(), nap_then_exit, 300);
  child.start();
  child.join();
  EXPECT_EQ(child.exitcode(), std::optional<int>(5));

  std::vector<unsigned char> big(16u << 20);
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<unsigned char>(i % 251);
  const std::size_t expected = std::accumulate(big.begin(), big.end(), std::size_t{0});
  for (int round = 0; round < 3; ++round)
    EXPECT_EQ(pool.apply(sum_of_bytes, big), expected);

  std::vector<int> items(400);
  std::iota(items.begin(), items.end(), 0);
  const std::vector<int> squares = pool.map(sleepy_square, items, 1);
  for (int i = 0; i < 400; ++i)
    ASSERT_EQ(squares[i], i * i);
  int next = 0;
  for (int square : pool.imap(sleepy_square, items, 1)) {
    ASSERT_EQ(square, next * next);
    ++next;
  }
  EXPECT_EQ(next, 400);
  pool.close();
  pool.join();
  EXPECT_GT(deliveries.load(), 10) << "the storm did not reach this process";
}

// With SIGCHLD set to SIG_IGN the kernel keeps no exit status: join() still returns once the
// child ended, exitcode() reads 255 (documented: the status is lost; on forkserver the server
// is the parent and keeps it), pools work, and no zombie is left (the fixture counts them).
TEST_P(posix_signals, sigchld_ignored_joins_with_the_lost_status_code) {
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  struct sigaction previous {};
  sigaction(SIGCHLD, &ignore, &previous);
  mp::process child(GetParam(), exit_three);
  child.start();
  const bool joined = child.join(30s);
  const std::optional<int> code = child.exitcode();
  std::vector<int> squares;
  {
    mp::pool pool(mp::pool_options{2, {}, 1, GetParam()});  // workers retire and are replaced
    squares = pool.map(sleepy_square, std::vector<int>{1, 2, 3, 4, 5, 6}, 1);
  }
  sigaction(SIGCHLD, &previous, nullptr);
  EXPECT_TRUE(joined);
  // The fork server reaps its children itself and passes the status on: it survives there.
  const int expected = GetParam() == mp::start_method::forkserver ? 3 : 255;
  EXPECT_EQ(code, std::optional<int>(expected));
  EXPECT_EQ(squares, (std::vector<int>{1, 4, 9, 16, 25, 36}));
}

// SIGTERM (and SIGINT) blocked in the starting thread: the child does not inherit the mask,
// so terminate() still ends it at once (it did not on fork: the child kept SIGTERM blocked
// and join(5 s) timed out), and a pool's terminate() needs no escalation to SIGKILL.
TEST_P(posix_signals, terminate_works_when_the_parent_blocks_sigterm) {
  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGINT);
  sigset_t previous;
  pthread_sigmask(SIG_BLOCK, &blocked, &previous);
  mp::process child(GetParam(), sleep_for_ever);
  child.start();
  child.terminate();
  const bool ended = child.join(30s);
  if (!ended) {
    child.kill();
    child.join();
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  EXPECT_TRUE(ended) << "terminate() did not end a child whose parent blocks SIGTERM";
  EXPECT_EQ(child.exitcode(), std::optional<int>(-SIGTERM));
}

// Ctrl-C: SIGINT to a program's whole process group while its pool maps. The workers ignore
// it (the program decides what an interrupt means); here the program handles it and its map
// comes back whole. Before: every worker died of SIGINT and the map failed with worker_lost.
TEST_P(posix_signals, ctrl_c_to_the_process_group_is_the_programs_to_handle) {
  const std::string gate = multiproc_test::temporary_path("ctrl-c");
  mp::process program(GetParam(), program_with_a_pool, gate, static_cast<int>(GetParam()));
  program.start();
  const bool started = multiproc_test::within(30s, [&] { return file_exists(gate + "-started"); });
  if (started) ::kill(-static_cast<pid_t>(*program.pid()), SIGINT);
  std::ofstream(gate + "-go") << "go";
  const bool ended = program.join(60s);
  if (!ended) {
    program.kill();
    program.join();
  }
  std::remove((gate + "-started").c_str());
  std::remove((gate + "-go").c_str());
  ASSERT_TRUE(started) << "the program's pool never ran its first task";
  ASSERT_TRUE(ended);
  EXPECT_EQ(program.exitcode(), std::optional<int>(0))
      << "2: a worker died of the interrupt; 3: the program never saw it";
}

INSTANTIATE_TEST_SUITE_P(methods, posix_signals,
                         ::testing::ValuesIn(multiproc_test::pool_methods()),
                         multiproc_test::method_name);
#endif
