// Hardening (issue 9, item 2): fork while the program's own threads are busy. Four threads
// hammer malloc/free, iostreams and stdio (std::cout and printf, with the process's stdout on
// /dev/null for the test, so its output stays clean) and a user std::mutex, while a pool on
// fork forks 500 workers (maxtasksperchild=1) and 200 mp::process are started and joined.
// What is safe there: malloc, stdio and the iostreams over it (glibc takes malloc's and the
// FILE list's locks around fork() and resets the FILE locks in the child), multiproc's own
// locks (held across its fork). What is not: a lock another thread holds at the fork, such as
// the user mutex -- the child's copy stays locked for ever. That case is not run on fork (it
// hangs by design); the second test shows the way out: start_method::automatic, the default,
// picks the fork server in a program with threads, and there the same task takes the mutex.
// README, "What is and is not safe with fork".
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

/// The program's own mutex: the busy threads take it all the time; in the second test one
/// thread holds it while children start.
std::mutex user_mutex;
long guarded_counter = 0;

/// What a child does with the facilities the busy threads were using at the fork: allocates
/// (small and mmap-sized), formats and parses with iostreams, writes to std::cout and stdout
/// (on /dev/null). Returns a value the parent checks.
long use_malloc_and_streams(long x) {
  std::vector<std::unique_ptr<char[]>> blocks;
  for (std::size_t size : {16u, 1000u, 70000u, 300000u}) {
    blocks.emplace_back(new char[size]);
    blocks.back()[size - 1] = static_cast<char>(x);
  }
  std::ostringstream out;
  out << "task " << x << ' ' << 2.5 * static_cast<double>(x) << '\n';
  const std::string line = out.str();
  std::cout.write(line.data(), static_cast<std::streamsize>(line.size()));
  std::cout.flush();
  std::printf("%s", line.c_str());
  std::fflush(stdout);
  std::istringstream in(line);
  std::string word;
  long parsed = -1;
  in >> word >> parsed;
  return parsed * 2 + 1;
}

/// A pool task: the value, and which worker ran it.
std::pair<long, long> pool_task(long x) {
  return {use_malloc_and_streams(x), mp::this_process::id()};
}

/// Leaves with _Exit, not exit: a forked copy of a threaded program must not run the parent's
/// atexit handlers and static destructors (they may need a lock another thread held at the
/// fork; and LeakSanitizer's exit check there reports what only the missing threads' stacks
/// still pointed to).
int process_target(int x) {
  const long y = use_malloc_and_streams(x);
  std::_Exit(y == 2L * x + 1 ? x % 100 : 200);
}

/// Takes the user mutex: on fork, if another thread held it at the fork, this never returns.
long take_user_mutex(long x) {
  std::lock_guard<std::mutex> hold(user_mutex);
  ++guarded_counter;
  return x + 1;
}
void take_user_mutex_and_exit(int x) {
  std::exit(take_user_mutex(x) == x + 1 ? 0 : 1);
}

/// Points the process's stdout (descriptor 1) at /dev/null while it lives, so that what the
/// busy threads and the children print goes nowhere; gtest writes nothing meanwhile (the
/// tests assert after it is restored).
class stdout_to_dev_null {
 public:
  stdout_to_dev_null() {
    std::cout.flush();
    std::fflush(stdout);
    saved_ = ::dup(STDOUT_FILENO);
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    ::dup2(null, STDOUT_FILENO);
    ::close(null);
  }
  ~stdout_to_dev_null() {
    std::cout.flush();
    std::fflush(stdout);
    ::dup2(saved_, STDOUT_FILENO);
    ::close(saved_);
  }
  stdout_to_dev_null(const stdout_to_dev_null&) = delete;
  stdout_to_dev_null& operator=(const stdout_to_dev_null&) = delete;

 private:
  int saved_ = -1;
};

/// Four threads that, until stopped, allocate and free (sizes up to 256 KiB, past malloc's
/// mmap threshold), format and parse with std::ostringstream/istringstream, write to a
/// std::ofstream of their own, to std::cout and with printf (stdout is /dev/null), and (if
/// asked) take the user mutex. Each counts its rounds and its wrong parses.
class busy_threads {
 public:
  explicit busy_threads(bool take_user_mutex) : take_user_mutex_(take_user_mutex) {
    for (int t = 0; t < 4; ++t)
      threads_.emplace_back([this, t] { run(t); });
  }
  ~busy_threads() { stop(); }
  void stop() {
    stop_ = true;
    for (auto& thread : threads_)
      if (thread.joinable()) thread.join();
  }
  long rounds() const { return rounds_.load(); }
  long wrong() const { return wrong_.load(); }

 private:
  void run(int t) {
    std::ofstream null("/dev/null");
    unsigned next = 12345u + static_cast<unsigned>(t);
    for (long round = 0; !stop_.load(std::memory_order_relaxed); ++round) {
      next = next * 1103515245u + 12345u;
      const std::size_t size = 16 + (next >> 8) % (256 * 1024);
      std::unique_ptr<char[]> block(new char[size]);
      block[size - 1] = 1;
      void* raw = std::malloc(1 + (next >> 4) % 4096);
      std::ostringstream out;
      out << t << ' ' << round << ' ' << size << '\n';
      const std::string line = out.str();
      null << line;
      // write(), not operator<<: formatted output resets the shared std::cout's width, a race
      // (under TSan) between threads printing to one stream.
      std::cout.write(line.data(), static_cast<std::streamsize>(line.size()));
      std::printf("%s", line.c_str());
      std::free(raw);
      {
        std::unique_lock<std::mutex> hold(user_mutex, std::defer_lock);
        if (take_user_mutex_) {
          hold.lock();
          ++guarded_counter;
        }
        std::istringstream in(line);  // parsed under the lock: held for a while, often at fork
        int thread = -1;
        long parsed = -1;
        in >> thread >> parsed;
        if (thread != t || parsed != round) ++wrong_;
      }
      ++rounds_;
    }
  }

  const bool take_user_mutex_;
  std::atomic<bool> stop_{false};
  std::atomic<long> rounds_{0};
  std::atomic<long> wrong_{0};
  std::vector<std::thread> threads_;
};

using hardening_busy_threads = multiproc_test::checked;

#if defined(__SANITIZE_ADDRESS__)
#define MULTIPROC_TEST_ADDRESS_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MULTIPROC_TEST_ADDRESS_SANITIZER 1
#endif
#endif

}  // namespace

// 500 pool workers (maxtasksperchild=1: each task in a newly forked worker) and 200 processes,
// all forked while four threads are inside malloc, iostreams, stdio and the user mutex: every
// child runs, every result and exit code is right, nothing hangs (a child that deadlocked on an
// inherited lock would: the waits below are hang guards, far beyond the seconds this takes).
TEST_F(hardening_busy_threads, fork_while_four_threads_hammer_malloc_streams_and_a_mutex) {
  MULTIPROC_SKIP_FORK_POOLS_WHEN_SANITIZED();
#if defined(MULTIPROC_TEST_ADDRESS_SANITIZER)
  // Must skip: AddressSanitizer's runtime (clang 19 too) holds its allocator's locks across
  // fork() but not its quarantine's. Threads that free all the time (these four) often hold it
  // at the fork, and the child then spins for ever at its first free that drains the
  // quarantine (caught in gdb: a worker in Quarantine::Drain -> StaticSpinMutex::LockSlow, from
  // ~frame_reader; 3 of 8 runs here hung). A limit of the sanitizer, not of fork or multiproc:
  // ThreadSanitizer and the plain builds run this test.
  GTEST_SKIP() << "ASan's quarantine lock is not held across fork: a forked child can hang";
#endif
  constexpr int tasks = 500;
  constexpr int processes = 200;
  std::vector<long> results(tasks, -1);
  std::vector<std::string> failures;
  std::vector<int> exit_codes(processes, -1000);
  std::set<long> worker_pids;
  long rounds_during_forks = 0;
  long wrong_parses = 0;
  {
    stdout_to_dev_null quiet;
    busy_threads busy(true);
    while (busy.rounds() < 100)
      std::this_thread::yield();  // all busy before the first fork
    const long rounds_before = busy.rounds();
    mp::pool pool(mp::pool_options{2, {}, 1, mp::start_method::fork});
    std::vector<mp::async_result<std::pair<long, long>>> pending;
    for (int i = 0; i < tasks; ++i)
      pending.push_back(pool.apply_async(pool_task, static_cast<long>(i)));
    // The processes start while the pool forks its workers from its supervisor threads.
    for (int i = 0; i < processes && failures.empty(); ++i) {
      mp::process p(mp::start_method::fork, process_target, i);
      p.start();
      if (!p.join(60s)) {
        failures.push_back("process " + std::to_string(i) + " hung");
        p.kill();
        p.join();
      }
      exit_codes[i] = p.exitcode().value_or(-1000);
    }
    for (int i = 0; i < tasks; ++i) {
      try {
        const auto [value, pid] = pending[i].get(120s);
        results[i] = value;
        worker_pids.insert(pid);
      } catch (const std::exception& e) {
        failures.push_back("task " + std::to_string(i) + ": " + e.what());
        pool.terminate();  // one hang is enough to know: the rest fail at once
      }
    }
    rounds_during_forks = busy.rounds() - rounds_before;
    busy.stop();
    wrong_parses = busy.wrong();
  }
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, the first: " << failures[0];
  for (int i = 0; i < tasks; ++i)
    ASSERT_EQ(results[i], 2L * i + 1) << "task " << i;
  for (int i = 0; i < processes; ++i)
    ASSERT_EQ(exit_codes[i], i % 100) << "process " << i;
  // One worker per task (maxtasksperchild=1): 500 forks. A pid comes back only if the kernel's
  // pid counter wraps during the test, so nearly all differ.
  EXPECT_GE(worker_pids.size(), static_cast<std::size_t>(tasks) * 9 / 10);
  EXPECT_GT(rounds_during_forks, 0) << "the threads were not busy while the children forked";
  EXPECT_EQ(wrong_parses, 0);
  RecordProperty("busy_rounds_during_forks", std::to_string(rounds_during_forks));
}

// The unsafe case's way out. A thread holds the user mutex the whole time children start
// (with four more busy threads): a child forked now would inherit it locked and hang in
// take_user_mutex. On start_method::automatic (the default) the program has threads, so its
// children come from the fork server (a process of one thread that never took the mutex), or
// are spawned where there is none: the same task takes the mutex and returns.
TEST_F(hardening_busy_threads, automatic_uses_the_fork_server_so_a_task_may_take_a_user_mutex) {
  std::mutex release_lock;
  std::condition_variable release_wake;
  bool release = false, holding = false;
  std::thread holder([&] {
    std::lock_guard<std::mutex> hold(user_mutex);
    std::unique_lock<std::mutex> lock(release_lock);
    holding = true;
    release_wake.notify_all();
    release_wake.wait(lock, [&] { return release; });
  });
  {
    std::unique_lock<std::mutex> lock(release_lock);
    release_wake.wait(lock, [&] { return holding; });
  }
  std::vector<long> results;
  std::vector<mp::start_method> process_methods;
  std::vector<std::optional<int>> exit_codes;
  mp::start_method resolved = mp::start_method::fork;
  {
    stdout_to_dev_null quiet;
    busy_threads busy(false);  // the holder keeps the user mutex: they would only wait for it
    resolved = mp::resolve_start_method(mp::start_method::automatic);
    mp::pool pool(mp::pool_options{2, {}, 1, mp::start_method::automatic});
    std::vector<mp::async_result<long>> pending;
    for (long i = 0; i < 20; ++i)
      pending.push_back(pool.apply_async(take_user_mutex, i));
    for (int i = 0; i < 5; ++i) {
      mp::process p(mp::start_method::automatic, take_user_mutex_and_exit, i);
      p.start();
      process_methods.push_back(p.method());
      if (!p.join(60s)) p.kill();  // a hang guard: the exit code then says -9
      p.join();
      exit_codes.push_back(p.exitcode());
    }
    for (auto& r : pending) {
      try {
        results.push_back(r.get(120s));
      } catch (const mp::timeout_error&) {
        results.push_back(-1);
        pool.terminate();
        break;
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(release_lock);
    release = true;
  }
  release_wake.notify_all();
  holder.join();
  const mp::start_method expected = mp::start_method_available(mp::start_method::forkserver)
                                        ? mp::start_method::forkserver
                                        : mp::start_method::spawn;
  EXPECT_EQ(resolved, expected) << "automatic picked fork in a program with threads";
  for (auto method : process_methods)
    EXPECT_EQ(method, expected);
  ASSERT_EQ(results.size(), 20u);
  for (long i = 0; i < 20; ++i)
    EXPECT_EQ(results[i], i + 1) << "task " << i;
  for (const auto& code : exit_codes)
    EXPECT_EQ(code, std::optional<int>(0));
}
