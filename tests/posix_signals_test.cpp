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
#include <numeric>
#include <optional>
#include <thread>
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

INSTANTIATE_TEST_SUITE_P(methods, posix_signals,
                         ::testing::ValuesIn(multiproc_test::pool_methods()),
                         multiproc_test::method_name);
#endif
