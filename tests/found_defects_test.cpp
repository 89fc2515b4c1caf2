// Defects a review of issues 8, 17 and 18 found (each test failed on e955798, before the
// fix), kept as regression tests: the behaviour each states must hold on every start method.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

#if MULTIPROC_HAS_FORK
#include <sys/resource.h>
#include <unistd.h>
#endif

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

int tiny(int x) {
  return x + 1;
}

int count_lines(const std::string& path) {
  std::ifstream in(path);
  int lines = 0;
  for (std::string line; std::getline(in, line);)
    ++lines;
  return lines;
}

/// An initializer that records each worker start in `path`; the second worker to start dies in
/// it (after a while, so the pool has sent it tasks by then), as a crash or the OOM killer
/// would end a replacement worker before it is ready. Every other start succeeds.
void second_start_dies_in_initializer(std::string path) {
  {
    std::ofstream out(path, std::ios::app);
    out << mp::this_process::id() << '\n';
  }
  if (count_lines(path) == 2) {
    std::this_thread::sleep_for(300ms);
    std::_Exit(3);
  }
}

using found_defects = multiproc_test::method_test;

#if MULTIPROC_HAS_FORK
long own_pid(int) {
  return mp::this_process::id();
}

/// Records the worker start in `path`, then leaves the worker no free descriptor number (as a
/// worker that has used up its RLIMIT_NOFILE would be): tasks with small payloads still run.
void record_start_and_use_up_descriptors(std::string path) {
  {
    std::ofstream out(path, std::ios::app);
    out << mp::this_process::id() << '\n';
  }
  const int lowest_free = ::dup(0);
  ::close(lowest_free);
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = static_cast<rlim_t>(lowest_free);
  ::setrlimit(RLIMIT_NOFILE, &limit);
}

// Finding: a worker that cannot map its claim ledger exits (worker.cpp, frame_kind::ledger:
// protocol_failure_exit_code). It had said it was ready, so finish_worker() does not count a
// failed start, and the pool keeps ledger_unavailable_ false: the next worker gets a ledger
// frame as soon as it holds two tasks, and exits too. The pool churns through one worker per
// batch, silently, for as long as tiny tasks come. Before issue 17 such a worker served on.
TEST_P(found_defects, a_worker_that_cannot_map_its_ledger_does_not_make_the_pool_churn) {
#if defined(MULTIPROC_TEST_SANITIZED)
  // The worker runs out of descriptors on purpose; a sanitizer runtime then cannot read its
  // own process's maps, and UBSan reports every virtual call as one on an invalid vptr.
  GTEST_SKIP() << "starves a worker of descriptors, which the sanitizer runtime needs";
#endif
  const std::string path = multiproc_test::temporary_path("fd-starts");
  {
    mp::pool pool(
        mp::pool_options{1, mp::call(record_start_and_use_up_descriptors, path), 0, method()});
    std::vector<mp::async_result<long>> results;
    for (int round = 0; round < 20; ++round) {
      results.clear();
      for (int i = 0; i < 200; ++i)
        results.push_back(pool.apply_async(own_pid, i));
      for (auto& r : results)
        r.get(30s);
    }
    pool.close();
    pool.join();
  }
  const int starts = count_lines(path);
  std::remove(path.c_str());
  EXPECT_LE(starts, 3) << "worker starts for 4000 tiny tasks on pool(1)";
}
#endif

// Finding: supervision.cpp finish_worker() counts the first unanswered task as started when
// the worker has a claim word (front().number <= last_claimed()), even if the worker never
// said it was ready. give_ledger_locked() starts the word at the tasks sent before
// (start_at(tasks_sent)), so a replacement worker that is sent two tasks while its initializer
// runs, and dies in the initializer, has its first task reported worker_lost although it never
// ran. Before issue 17 (db48d99) `ready_seen` decided, and that task went to another worker.
TEST_P(found_defects, a_replacement_worker_dying_in_its_initializer_loses_no_task) {
  const std::string path = multiproc_test::temporary_path("init-starts");
  {
    // One slot, recycled after 4 tasks: the second worker starts while tiny tasks are queued.
    mp::pool pool(
        mp::pool_options{1, mp::call(second_start_dies_in_initializer, path), 4, method()});
    ASSERT_EQ(pool.apply(tiny, 0), 1);  // the pool learns its tasks are tiny: it batches
    std::vector<mp::async_result<int>> results;
    for (int i = 0; i < 40; ++i)
      results.push_back(pool.apply_async(tiny, i));
    int lost = 0;
    for (int i = 0; i < 40; ++i) {
      try {
        EXPECT_EQ(results[static_cast<std::size_t>(i)].get(30s), i + 1);
      } catch (const mp::worker_lost& e) {
        ++lost;
        ADD_FAILURE() << "task " << i << " reported lost by worker " << e.pid() << " (exit code "
                      << e.exitcode() << "), which died before it was ready";
      }
    }
    EXPECT_EQ(lost, 0);
    pool.close();
    pool.join();
  }
  EXPECT_GE(count_lines(path), 3);  // the second start did die; a third served
  std::remove(path.c_str());
}

int nothing(int x) {
  return x;
}

/// The user's program, run as a child of the test: writes `lines` lines to a log FILE it opened
/// itself while a pool rotates its workers (maxtasksperchild 1), then closes the log.
void log_while_a_pool_rotates_workers(std::string path, int lines, mp::start_method method) {
  FILE* log = std::fopen(path.c_str(), "w");
  if (log == nullptr) std::exit(20);
  mp::pool pool(mp::pool_options{2, {}, 1, method});
  std::vector<int> items(multiproc_test::volume(200));
  auto all = pool.map_async(nothing, items, 1);
  int printed = 0;
  while (printed < lines || !all.ready())
    std::fprintf(log, "line %d abcdefghijklmnopqrstuvwxyz0123456789\n", printed++);
  all.get();
  std::ofstream(path + ".count") << printed << '\n';
  pool.close();
  pool.join();
  std::fclose(log);
}

// Finding (issue 18, partly documented in README "Output and fork"): a forked child drops
// what stdout/stderr/std::cout held, but flush_own_output() (fork.cpp) and run_process_call()
// (worker.cpp) end the child with fflush(NULL), which writes out the bytes another parent
// thread put in any other FILE between flush_before_fork() and fork(): the program's own log
// file gets lines twice. Python's children flush only sys.stdout/sys.stderr.
TEST_P(found_defects, a_forked_child_does_not_repeat_the_parents_log_file) {
  constexpr int lines = multiproc_test::volume(20000);
  const std::string path = multiproc_test::temporary_path("log.txt");
  mp::process program(method(), log_while_a_pool_rotates_workers, path, lines, method());
  program.start();
  program.join();
  EXPECT_EQ(program.exitcode(), 0);
  int printed = -1;
  std::ifstream(path + ".count") >> printed;
  EXPECT_EQ(count_lines(path), printed);
  std::remove(path.c_str());
  std::remove((path + ".count").c_str());
}

/// Item 0 naps 300 ms; every item reports the worker that ran it.
long nap_on_zero_and_report(int x) {
  if (x == 0) std::this_thread::sleep_for(300ms);
  return mp::this_process::id();
}

// Finding: maxtasksperchild counts the tasks sent to a worker (dispatch.cpp send_task_locked:
// tasks_sent >= maxtasksperchild appends the stop frame), not the tasks it completed. Since
// issue 17 the rebalancer takes unstarted tasks back, so a worker is retired after running
// fewer tasks than maxtasksperchild (Python: "the number of tasks a worker process can
// complete before it will exit"; the README: "after this many tasks"). Here the worker that
// naps is sent items 0,2,4,6,8,10, its five tiny ones are taken back while it naps, and it
// exits having run one task.
TEST_P(found_defects, maxtasksperchild_counts_tasks_run_not_tasks_taken_back) {
  mp::pool pool(mp::pool_options{2, {}, 6, method()});
  for (int i = 0; i < 4; ++i)
    pool.apply(nap_on_zero_and_report, 1);  // the pool learns its tasks are tiny
  std::vector<int> items(12);
  for (int i = 0; i < 12; ++i)
    items[static_cast<std::size_t>(i)] = i;
  const std::vector<long> pids = pool.map(nap_on_zero_and_report, items, 1);
  const long napper = pids[0];
  int run_by_napper = 0;
  for (long pid : pids)
    run_by_napper += pid == napper ? 1 : 0;
  // A worker that has run fewer than 6 tasks must still serve: it has not been retired.
  std::this_thread::sleep_for(300ms);
  if (run_by_napper < 6) {
    EXPECT_TRUE(multiproc_test::process_running(napper))
        << "the worker was retired by maxtasksperchild=6 after running " << run_by_napper
        << " task(s)";
  }
  pool.close();
  pool.join();
}

#if MULTIPROC_HAS_FORK
/// Waits (30 s at most, a hang guard) until `path` exists; true if it did.
bool wait_until_exists(std::string path) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!std::ifstream(path).good()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

std::size_t payload_size(std::vector<char> payload) {
  return payload.size();
}

/// In a fresh process (its descriptor limit is its own): a pool on `method` whose one worker
/// is blocked; this process is left 32 free descriptors, then 300 tasks with 256 KiB
/// arguments (each in a shared block, one descriptor each) are submitted. Exits 0 if every
/// submit either ran right or failed at once with a serialization_error naming the limit, at
/// least one failed, and nothing hung; 2 if none failed, 3 for a wrong or untyped outcome.
void submit_large_tasks_past_the_descriptor_limit(int method, std::string path) {
  int code = 0;
  {
    mp::pool pool(mp::pool_options{1, {}, 0, static_cast<mp::start_method>(method)});
    auto blocker = pool.apply_async(wait_until_exists, path);
    const std::string staged = path + ".staged";
    std::ofstream(staged) << "go\n";  // renamed into place later: no descriptor needed then
    const int lowest_free = ::dup(0);
    ::close(lowest_free);
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = static_cast<rlim_t>(lowest_free + 32);
    ::setrlimit(RLIMIT_NOFILE, &limit);
    int refused = 0;
    std::vector<mp::async_result<std::size_t>> results;
    for (int i = 0; i < 300; ++i) {
      try {
        results.push_back(pool.apply_async(payload_size, std::vector<char>(256 * 1024, 1)));
      } catch (const mp::serialization_error& e) {
        ++refused;
        if (std::string(e.what()).find("Too many open files") == std::string::npos) code = 3;
      }
    }
    std::rename(staged.c_str(), path.c_str());
    if (!blocker.get(30s)) code = 3;
    for (auto& result : results) {
      if (result.get(30s) != 256 * 1024) code = 3;
    }
    if (code == 0 && refused == 0) code = 2;
  }
  std::remove(path.c_str());
  std::exit(code);
}

// Finding (review of the portable build's descriptor-passing blocks): each queued large task
// holds a descriptor until its result is in, so a program can reach its descriptor limit by
// queueing them. The submit past the limit must fail with a serialization_error that says so
// (the portable build said "no random bytes for the spawn secret", a start_error, because it
// opened /dev/urandom to name the block); the tasks queued before it run; nothing hangs.
TEST_P(found_defects, large_tasks_queued_past_the_descriptor_limit_fail_their_submit) {
#if defined(MULTIPROC_TEST_SANITIZED)
  GTEST_SKIP() << "starves the process of descriptors, which the sanitizer runtime needs";
#endif
  mp::process child(mp::start_method::spawn, submit_large_tasks_past_the_descriptor_limit,
                    static_cast<int>(method()), multiproc_test::temporary_path("fd-limit"));
  child.start();
  child.join();
  EXPECT_EQ(child.exitcode(), 0) << "2: no submit was refused; 3: a wrong or untyped outcome";
}
#endif

INSTANTIATE_TEST_SUITE_P(methods, found_defects,
                         ::testing::ValuesIn(multiproc_test::pool_methods()),
                         multiproc_test::method_name);

}  // namespace
