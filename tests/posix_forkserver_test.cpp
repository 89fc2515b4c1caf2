// The fork server (Linux): its life (killed from outside, its requester killed), its
// authentication (forged requests), the preload, and the automatic start method's choice in a
// program with threads. The conformance and fault suites run on forkserver as on fork and
// spawn (their parameter lists, support.cpp); these are what only the server has.
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "../src/core/forkserver.hpp"
#include "support.hpp"
#include "support_process_facts.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

using posix_forkserver = multiproc_test::checked;

#define MULTIPROC_REQUIRE_FORKSERVER()                                  \
  if (!mp::start_method_available(mp::start_method::forkserver)) {      \
    GTEST_SKIP() << "no fork server here (portable build, old kernel)"; \
  }

std::vector<long> read_pids(const std::string& path) {
  std::ifstream in(path);
  std::vector<long> pids;
  long pid;
  while (in >> pid)
    pids.push_back(pid);
  return pids;
}

void append_line(const std::string& path, long value) {
  std::ofstream(path, std::ios::app) << value << "\n" << std::flush;
}

void append_own_pid(std::string path) {
  append_line(path, static_cast<long>(::getpid()));
}

int add_one(int x) {
  return x + 1;
}

/// Blocks until its parent (the test) closes the pipe's write end or kills it.
void wait_for_ever() {
  for (;;)
    ::pause();
}

/// In a helper process: a pool on forkserver; writes the workers' pids (one line each, from
/// their initializers), then the server's and its spare's, then waits to be killed.
void forkserver_family(std::string path) {
  mp::pool pool(
      mp::pool_options{2, mp::call(append_own_pid, path), 0, mp::start_method::forkserver});
  if (pool.apply(add_one, 1) != 2) std::_Exit(3);
  const long server = multiproc::detail::forkserver_pid();
  std::vector<long> spares;
  if (!multiproc_test::within(10s, [&] {
        spares = multiproc_test::children_named(server, "mp-spare");
        return spares.size() == 1;
      })) {
    std::_Exit(4);
  }
  append_line(path, server);
  append_line(path, spares[0]);
  wait_for_ever();
}

TEST_F(posix_forkserver, a_server_killed_from_outside_is_replaced_at_the_next_start) {
  MULTIPROC_REQUIRE_FORKSERVER();
  mp::pool pool(mp::pool_options{2, {}, 0, mp::start_method::forkserver});
  EXPECT_EQ(pool.apply(add_one, 1), 2);
  mp::process running(mp::start_method::forkserver, wait_for_ever);
  running.start();
  const long server = multiproc::detail::forkserver_pid();
  ASSERT_GT(server, 0);

  multiproc_test::kill_from_outside(server);
  ASSERT_TRUE(
      multiproc_test::within(10s, [&] { return !multiproc_test::process_running(server); }));

  // The next start finds the server gone, reaps it and starts a new one.
  mp::process next(mp::start_method::forkserver, [] { std::exit(7); });
  next.start();
  ASSERT_TRUE(next.join(30s));
  EXPECT_EQ(next.exitcode(), 7);
  const long replacement = multiproc::detail::forkserver_pid();
  EXPECT_GT(replacement, 0);
  EXPECT_NE(replacement, server);

  // The pool's workers were tied to the old server and went with it; the pool replaces them
  // (through the new server) and goes on. A task sent to a worker in the instant before its
  // end is known fails with worker_lost, as any task on a worker killed from outside.
  int value = 0;
  for (int attempt = 0; attempt < 5 && value == 0; ++attempt) {
    try {
      value = pool.apply_async(add_one, 41).get(30s);
    } catch (const mp::worker_lost&) {
    }
  }
  EXPECT_EQ(value, 42);

  // An mp::process the old server forked lives on, as a forked child outlives its parent; it
  // can still be signalled and waited for (its pidfd), but its status went with the server.
  EXPECT_TRUE(running.is_alive());
  running.terminate();
  ASSERT_TRUE(running.join(30s));
  EXPECT_EQ(running.exitcode(), 255);
}

/// Waits for a word on `from`, then fails (exit code 1).
void fail_on_word(mp::connection from) {
  (void)from.recv<int>();
  throw std::runtime_error("told to fail");
}

// A child says the status it exits with as its call returns: known even when the server that
// would have reaped it is gone (a child killed by a signal then reads 255, as above).
TEST_F(posix_forkserver, a_child_outliving_its_server_still_reports_the_status_it_returns_with) {
  MULTIPROC_REQUIRE_FORKSERVER();
  auto [here, there] = mp::pipe();
  mp::process child(mp::start_method::forkserver, fail_on_word, there);
  child.start();
  const long server = multiproc::detail::forkserver_pid();
  ASSERT_GT(server, 0);
  multiproc_test::kill_from_outside(server);
  ASSERT_TRUE(
      multiproc_test::within(10s, [&] { return !multiproc_test::process_running(server); }));
  EXPECT_TRUE(child.is_alive());
  here.send(1);
  ASSERT_TRUE(child.join(30s));
  EXPECT_EQ(child.exitcode(), 1);
}

// A server that never answers (stopped, here) must not hang starts: the start fails with
// errc::timed_out within the answer limit, the server is replaced, and the next start works.
TEST_F(posix_forkserver, a_stopped_server_fails_the_start_in_time_and_is_replaced) {
  MULTIPROC_REQUIRE_FORKSERVER();
  mp::process first(mp::start_method::forkserver, [] {});
  first.start();
  ASSERT_TRUE(first.join(30s));
  const long server = multiproc::detail::forkserver_pid();
  ASSERT_GT(server, 0);
  multiproc::detail::set_forkserver_answer_limit(500ms);
  struct restores_limit {
    ~restores_limit() { multiproc::detail::set_forkserver_answer_limit(30s); }
  } restore;
  ASSERT_EQ(::kill(static_cast<pid_t>(server), SIGSTOP), 0);

  const auto began = std::chrono::steady_clock::now();
  mp::process stalled(mp::start_method::forkserver, [] {});
  try {
    stalled.start();
    ADD_FAILURE() << "start() should have thrown";
  } catch (const mp::start_error& e) {
    EXPECT_EQ(e.code(), std::errc::timed_out) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - began, 20s);  // a hang guard, not a timing
  EXPECT_FALSE(multiproc_test::process_running(server));     // killed and reaped
  multiproc::detail::set_forkserver_answer_limit(30s);       // for the new server's first fork

  mp::process next(mp::start_method::forkserver, [] { std::exit(5); });
  next.start();
  ASSERT_TRUE(next.join(30s));
  EXPECT_EQ(next.exitcode(), 5);
  EXPECT_NE(multiproc::detail::forkserver_pid(), server);
}

TEST_F(posix_forkserver, server_and_pool_workers_end_within_5s_of_their_requester) {
  MULTIPROC_REQUIRE_FORKSERVER();
  const std::string path = multiproc_test::temporary_path("forkserver-family");
  // The requester is itself a child (spawned: a clean process that starts its own server).
  mp::process requester(mp::start_method::spawn, forkserver_family, path);
  requester.start();
  ASSERT_TRUE(multiproc_test::within(30s, [&] { return read_pids(path).size() == 4; }));
  const auto family = read_pids(path);  // two workers, the server, its spare
  std::remove(path.c_str());
  for (long pid : family)
    EXPECT_TRUE(multiproc_test::process_running(pid)) << pid;
  requester.kill();
  requester.join();
  EXPECT_TRUE(multiproc_test::within(5s, [&] {
    for (long pid : family) {
      if (multiproc_test::process_running(pid)) return false;
    }
    return true;
  })) << "the server, its spare or a worker outlived its requester by more than 5 s";
}

/// Exits 3 if this process still bears the spare's name, 4 if it kept the server's scheduling
/// policy (SCHED_BATCH) rather than its requester's (SCHED_OTHER here).
void exit_3_if_named_spare() {
  std::ifstream comm("/proc/self/comm");
  std::string name;
  std::getline(comm, name);
  if (name == "mp-spare") std::_Exit(3);
  if (::sched_getscheduler(0) != SCHED_OTHER) std::_Exit(4);
}

// The server keeps one child forked ahead (named mp-spare while it waits). A start takes it,
// under the program's own name; one killed from outside is replaced, and starts go on.
TEST_F(posix_forkserver, the_spare_is_named_while_it_waits_and_replaced_when_killed) {
  MULTIPROC_REQUIRE_FORKSERVER();
  mp::process first(mp::start_method::forkserver, exit_3_if_named_spare);
  first.start();
  ASSERT_TRUE(first.join(30s));
  EXPECT_EQ(first.exitcode(), 0) << "3: a started child kept the spare's name; 4: the server's "
                                    "scheduling policy";
  const long server = multiproc::detail::forkserver_pid();
  ASSERT_GT(server, 0);
  std::vector<long> spares;
  ASSERT_TRUE(multiproc_test::within(10s,
                                     [&] {
                                       spares = multiproc_test::children_named(server, "mp-spare");
                                       return spares.size() == 1;
                                     }))
      << "the server keeps exactly one spare; it has " << spares.size();

  multiproc_test::kill_from_outside(spares[0]);
  ASSERT_TRUE(
      multiproc_test::within(10s, [&] { return !multiproc_test::process_running(spares[0]); }));
  for (int i = 0; i < 3; ++i) {
    mp::process next(mp::start_method::forkserver, exit_3_if_named_spare);
    next.start();
    ASSERT_TRUE(next.join(30s));
    EXPECT_EQ(next.exitcode(), 0);
  }
  EXPECT_EQ(multiproc::detail::forkserver_pid(), server) << "a lost spare cost the server";
  std::vector<long> now;
  ASSERT_TRUE(multiproc_test::within(10s, [&] {
    now = multiproc_test::children_named(server, "mp-spare");
    return now.size() == 1;
  }));
  EXPECT_NE(now[0], spares[0]);
}

TEST_F(posix_forkserver, a_request_without_the_secret_is_refused) {
  MULTIPROC_REQUIRE_FORKSERVER();
  mp::process first(mp::start_method::forkserver, [] {});
  first.start();
  first.join();
  const long server = multiproc::detail::forkserver_pid();
  ASSERT_GT(server, 0);

  // A request on the server's own link with a wrong secret: answered with a refusal.
  EXPECT_EQ(multiproc::detail::send_forged_fork_request("0123456789abcdef0123456789abcdef", true),
            EACCES);
  EXPECT_EQ(multiproc::detail::send_forged_fork_request("short", true), EACCES);
  // The genuine secret on the same path is served (the check is not refusing everything).
  EXPECT_EQ(multiproc::detail::send_forged_fork_request("", true), 0);

  // A copy of this process (raw fork) holds the link and even knows the secret: the kernel
  // tells the server who sent it, and a request from any process but the one that started the
  // server is not served -- nor answered, so no answer can reach this process in place of its
  // own.
  const pid_t copy = ::fork();
  if (copy == 0) {
    try {
      ::_exit(multiproc::detail::send_forged_fork_request("", false) == 0 ? 0 : 1);
    } catch (...) {
      ::_exit(2);
    }
  }
  ASSERT_GT(copy, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(copy, &status, 0), copy);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the copy could not send its request";

  // The server is still this process's, serves it, and its answers are still in step.
  for (int i = 0; i < 3; ++i) {
    mp::process p(
        mp::start_method::forkserver, [](int code) { std::exit(code); }, 10 + i);
    p.start();
    ASSERT_TRUE(p.join(30s));
    EXPECT_EQ(p.exitcode(), 10 + i);
  }
  EXPECT_EQ(multiproc::detail::forkserver_pid(), server);
}

int preloaded = 0;
void preload_set(int value) {
  preloaded = value;
}
void preload_fail() {
  throw std::runtime_error("no model file");
}
int read_preloaded(int) {
  return preloaded;
}

TEST_F(posix_forkserver, preload_runs_in_the_server_before_it_forks) {
  MULTIPROC_REQUIRE_FORKSERVER();
  multiproc::detail::stop_forkserver();
  struct restore {
    ~restore() {
      multiproc::detail::stop_forkserver();
      mp::set_forkserver_preload({});
    }
  } restore_after;

  mp::set_forkserver_preload({mp::call(preload_set, 40), mp::call(preload_set, 42)});
  mp::process p(mp::start_method::forkserver, [] { std::exit(preloaded); });
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 42) << "the child did not start from the preloaded server";
  {
    mp::pool pool(mp::pool_options{2, {}, 0, mp::start_method::forkserver});
    EXPECT_EQ(pool.apply(read_preloaded, 0), 42);
  }
  EXPECT_EQ(preloaded, 0) << "the preload ran in this process";
  // The server runs: its preload cannot change any more.
  EXPECT_THROW(mp::set_forkserver_preload({}), mp::state_error);
  EXPECT_THROW(mp::set_forkserver_preload({mp::call()}), std::invalid_argument);

  // A preload that throws: no server, and the start says why.
  multiproc::detail::stop_forkserver();
  mp::set_forkserver_preload({mp::call(preload_fail)});
  mp::process q(mp::start_method::forkserver, [] {});
  try {
    q.start();
    ADD_FAILURE() << "a start on a server whose preload failed succeeded";
  } catch (const mp::start_error& e) {
    EXPECT_NE(std::string(e.what()).find("no model file"), std::string::npos) << e.what();
  }
  EXPECT_EQ(multiproc::detail::forkserver_pid(), 0);
}

/// The program's own lock, which one of its threads holds while processes start.
std::mutex program_lock;
/// What a child does that a forked copy of a threaded program cannot: take a lock another
/// thread of the parent held at the fork.
int take_program_lock(int value) {
  const std::lock_guard<std::mutex> guard(program_lock);
  return value;
}

TEST_F(posix_forkserver, automatic_never_picks_fork_while_eight_busy_threads_run) {
  MULTIPROC_REQUIRE_FORKSERVER();
#if !defined(MULTIPROC_TEST_SANITIZED)  // the sanitizers' runtimes run threads of their own
  EXPECT_EQ(mp::resolve_start_method(mp::start_method::automatic), mp::start_method::fork);
  {
    // multiproc's own threads (a pool's supervisors) do not count.
    mp::pool pool(mp::pool_options{2, {}, 0, mp::start_method::fork});
    EXPECT_EQ(pool.apply(add_one, 1), 2);
    EXPECT_EQ(mp::resolve_start_method(mp::start_method::automatic), mp::start_method::fork);
  }
#endif
  std::atomic<bool> stop{false};
  std::atomic<bool> locked{false};
  std::vector<std::thread> busy;
  for (int i = 0; i < 8; ++i) {
    busy.emplace_back([&stop, &locked, i] {
      std::unique_lock<std::mutex> held;
      if (i == 0) {
        held = std::unique_lock<std::mutex>(program_lock);
        locked.store(true);
      }
      while (!stop.load(std::memory_order_relaxed)) {
      }
    });
  }
  struct stopper {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~stopper() {
      stop.store(true);
      for (auto& t : threads)
        t.join();
    }
  } stop_at_end{stop, busy};
  while (!locked.load())
    std::this_thread::yield();

  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(mp::resolve_start_method(mp::start_method::automatic), mp::start_method::forkserver);
    // Odd starts take the default start method when it is automatic (the default build): the
    // busy-threads deadlock must not happen on the default either.
    const bool use_default =
        i % 2 == 1 && mp::default_start_method() == mp::start_method::automatic;
    const auto target = [](int v) { std::exit(take_program_lock(v)); };
    mp::process p =
        use_default ? mp::process(target, i) : mp::process(mp::start_method::automatic, target, i);
    p.start();
    EXPECT_EQ(p.method(), mp::start_method::forkserver);
    if (!p.join(30s)) {  // a hang guard: a forked child would wait for the lock for ever
      p.kill();
      p.join();
      FAIL() << "start " << i << " hung on a lock held by a thread of its parent";
    }
    EXPECT_EQ(p.exitcode(), i);
  }
  // Pool workers started (and replaced) on automatic while the threads run: never forked.
  mp::pool pool(mp::pool_options{2, {}, 2, mp::start_method::automatic});
  std::vector<mp::async_result<int>> results;
  for (int i = 0; i < 10; ++i)
    results.push_back(pool.apply_async(take_program_lock, i));
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(results[static_cast<std::size_t>(i)].get(30s), i);
}

TEST_F(posix_forkserver, a_pinned_method_is_kept) {
  MULTIPROC_REQUIRE_FORKSERVER();
  for (auto m : {mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver}) {
    mp::process p(m, [] {});
    EXPECT_EQ(p.method(), m);
    p.start();
    p.join();
    EXPECT_EQ(p.method(), m);
    EXPECT_EQ(p.exitcode(), 0);
  }
}

}  // namespace
