// The pool's fault semantics (the numbered faults of the pool issue), on every start method.
// Each test states the outcome (error type, exit code, time bound) and checks it.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"
#include "targets.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;
using multiproc_test::undecodable;

namespace {

int identity(int x) {
  return x;
}
long pid_of_worker(int) {
  return mp::this_process::id();
}
int boom(int) {
  throw std::runtime_error("boom");
}
int abort_on(int x) {
  if (x == 7) std::abort();
  return x;
}
int exit_three_on(int x) {
  if (x == 3) std::_Exit(3);
  return x;
}
/// Appends this process's pid to `path`, one per line: lets a test learn who ran a task.
void append_own_pid(const std::string& path) {
  std::ofstream out(path, std::ios::app);
  out << mp::this_process::id() << '\n';
}
/// Item 7 reports its worker's pid to the file, then aborts; the others return their number.
int abort_on_seven_reporting(std::pair<int, std::string> item) {
  if (item.first == 7) {
    append_own_pid(item.second);
    std::abort();
  }
  return item.first;
}
/// Ignores SIGTERM, then reports its worker's pid (so the test knows the task runs and the
/// signal is already ignored), then sleeps for ever: only SIGKILL ends it.
int report_ignoring_sigterm_and_sleep(std::string path) {
  std::signal(SIGTERM, SIG_IGN);
  append_own_pid(path);
  for (;;)
    std::this_thread::sleep_for(1h);
}
int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
/// Appends the worker's pid to a file, then sleeps: lets a test learn the workers' pids.
int report_and_sleep(std::string path) {
  {
    std::ofstream out(path, std::ios::app);
    out << mp::this_process::id() << '\n';
  }
  std::this_thread::sleep_for(1h);
  return 0;
}
std::set<long> read_pids(const std::string& path) {
  std::ifstream in(path);
  std::set<long> pids;
  long pid;
  while (in >> pid)
    pids.insert(pid);
  return pids;
}

/// The worker that ran the aborting task (its pid is the one line in `path`) is the one
/// reported lost, with abort's exit code, within 2 s of `since`.
void expect_lost_to_abort(const mp::worker_lost& e, const std::string& path,
                          std::chrono::steady_clock::time_point since) {
  EXPECT_LT(std::chrono::steady_clock::now() - since, 2s);
  EXPECT_EQ(e.exitcode(), multiproc_test::abort_exit_code());
  const auto pids = read_pids(path);
  ASSERT_EQ(pids.size(), 1u);
  EXPECT_EQ(e.pid(), *pids.begin());
}
undecodable make_undecodable(int v) {
  return undecodable{v};
}
int take_undecodable(undecodable u) {
  return u.value;
}
/// Records one worker start in `path`, then fails.
void failing_initializer(std::string path) {
  append_own_pid(path);
  throw std::runtime_error("no database");
}
/// How many lines (worker starts) the initializers wrote to `path`.
int count_lines(const std::string& path) {
  std::ifstream in(path);
  int lines = 0;
  for (std::string line; std::getline(in, line);)
    ++lines;
  return lines;
}
/// A slot of the pool gives up after this many starts in a row that never became ready
/// (src/core/pool/supervision.cpp, start_attempts): the bound on worker starts of a broken pool.
constexpr int start_attempts_per_slot = 3;

using pool_faults = multiproc_test::method_test;

// 1
TEST_P(pool_faults, task_exception_is_a_remote_error_and_the_worker_serves_on) {
  mp::pool pool(options(1));
  const long pid = pool.apply(pid_of_worker, 0);
  try {
    pool.apply(boom, 1);
    ADD_FAILURE() << "expected remote_error";
  } catch (const mp::remote_error& e) {
    EXPECT_EQ(e.remote_type(), "std::runtime_error");
    EXPECT_EQ(e.remote_what(), "boom");
    EXPECT_EQ(e.pid(), pid);
  }
  EXPECT_EQ(pool.apply(pid_of_worker, 0), pid);
}

// 2
TEST_P(pool_faults, abort_in_a_task_is_worker_lost_and_a_replacement_serves) {
  // One worker: the next task can only be served by a replacement, with another pid.
  mp::pool pool(options(1));
  const long first = pool.apply_async(pid_of_worker, 0).get(30s);
  const auto asked = std::chrono::steady_clock::now();
  try {
    pool.apply_async(abort_on, 7).get(30s);  // 30 s: a hang guard; the bound is below
    ADD_FAILURE() << "expected worker_lost";
  } catch (const mp::worker_lost& e) {
    EXPECT_EQ(e.pid(), first);
    EXPECT_EQ(e.exitcode(), multiproc_test::abort_exit_code());
  }
  EXPECT_LT(std::chrono::steady_clock::now() - asked, 2s);
  const long replacement = pool.apply_async(pid_of_worker, 0).get(30s);
  EXPECT_GT(replacement, 0);
  EXPECT_NE(replacement, first);
  EXPECT_FALSE(multiproc_test::process_running(first));
}

TEST_P(pool_faults, abort_in_a_task_fails_only_that_task) {
  mp::pool pool(options());
  const std::string path = multiproc_test::temporary_path("aborted");
  std::vector<std::pair<int, std::string>> input;
  std::vector<int> numbers;
  for (int i = 0; i < 20; ++i) {
    input.emplace_back(i, path);
    numbers.push_back(i);
  }
  // imap: item 7 fails with the pid of the worker that ran it, every other item arrives.
  const auto start = std::chrono::steady_clock::now();
  int index = 0;
  auto results = pool.imap(abort_on_seven_reporting, input);
  for (auto it = results.begin(); !(it == std::default_sentinel); ++it, ++index) {
    if (index == 7) {
      try {
        (void)*it;
        ADD_FAILURE() << "item 7 should have failed";
      } catch (const mp::worker_lost& e) {
        expect_lost_to_abort(e, path, start);
      }
    } else {
      EXPECT_EQ(*it, index);
    }
  }
  EXPECT_EQ(index, 20);
  std::remove(path.c_str());
  // map_async: the failed chunk's error, after every other chunk completed.
  const auto submitted = std::chrono::steady_clock::now();
  auto r = pool.map_async(abort_on_seven_reporting, input, 1);
  try {
    r.get(30s);  // a hang guard; the bound is below
    ADD_FAILURE() << "expected worker_lost";
  } catch (const mp::worker_lost& e) {
    expect_lost_to_abort(e, path, submitted);
  }
  std::remove(path.c_str());
  EXPECT_EQ(pool.map(identity, numbers), numbers);  // the pool serves on
}

TEST_P(pool_faults, exit_in_a_task_is_worker_lost_with_its_code) {
  mp::pool pool(options(1));
  const long first = pool.apply_async(pid_of_worker, 0).get(30s);
  const auto asked = std::chrono::steady_clock::now();
  auto lost = pool.apply_async(exit_three_on, 3);
  auto fine = pool.apply_async(exit_three_on, 4);  // behind it on the same worker
  try {
    lost.get(30s);  // a hang guard; the bound is below
    ADD_FAILURE() << "expected worker_lost";
  } catch (const mp::worker_lost& e) {
    EXPECT_EQ(e.pid(), first);
    EXPECT_EQ(e.exitcode(), 3);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - asked, 2s);
  EXPECT_EQ(fine.get(30s), 4);
  const long replacement = pool.apply_async(pid_of_worker, 0).get(30s);
  EXPECT_GT(replacement, 0);
  EXPECT_NE(replacement, first);
}

TEST_P(pool_faults, worker_killed_from_outside_mid_task) {
  // One worker: the queued tasks and the last apply can only be served by a replacement.
  mp::pool pool(options(1));
  const std::string path = multiproc_test::temporary_path("pids");
  auto victim = pool.apply_async(report_and_sleep, path);
  auto others = pool.map_async(sleep_ms, std::vector<int>(10, 20), 1);  // queued behind it
  ASSERT_TRUE(multiproc_test::within(30s, [&] { return read_pids(path).size() == 1; }));
  const long pid = *read_pids(path).begin();
  std::remove(path.c_str());
  const auto killed_at = std::chrono::steady_clock::now();
  multiproc_test::kill_from_outside(pid);
  try {
    victim.get(30s);
    ADD_FAILURE() << "expected worker_lost";
  } catch (const mp::worker_lost& e) {
    EXPECT_EQ(e.pid(), pid);
    EXPECT_EQ(e.exitcode(), multiproc_test::outside_kill_exit_code());
  }
  EXPECT_LT(std::chrono::steady_clock::now() - killed_at, 2s);
  EXPECT_EQ(others.get(30s), std::vector<int>(10, 20));
  const long replacement = pool.apply_async(pid_of_worker, 0).get(30s);
  EXPECT_GT(replacement, 0);
  EXPECT_NE(replacement, pid);
}

// 3
TEST_P(pool_faults, terminate_during_map_async_cancels_everything_promptly) {
  const auto before = multiproc_test::count_resources();
  const std::string path = multiproc_test::temporary_path("running");
  std::set<long> workers;
  {
    mp::pool pool(options());
    auto r =
        pool.map_async(report_ignoring_sigterm_and_sleep, std::vector<std::string>(6, path), 1);
    auto later = pool.apply_async(sleep_ms, 1);
    // Both workers run a task that already ignores SIGTERM: terminate must escalate.
    ASSERT_TRUE(multiproc_test::within(30s, [&] { return read_pids(path).size() == 2; }));
    workers = read_pids(path);
    const auto start = std::chrono::steady_clock::now();
    pool.terminate();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
    for (long pid : workers)
      EXPECT_FALSE(multiproc_test::process_running(pid)) << "worker " << pid << " survived";
    EXPECT_THROW(r.get(1s), mp::state_error);
    EXPECT_THROW(later.get(1s), mp::state_error);
    EXPECT_THROW(pool.apply_async(sleep_ms, 1), mp::state_error);
    pool.join();  // allowed after terminate
  }
  std::remove(path.c_str());
  EXPECT_TRUE(multiproc_test::same_resources(before));
}

// 4
TEST_P(pool_faults, close_then_join_delivers_everything_and_refuses_more) {
  mp::pool pool(options());
  std::vector<mp::async_result<int>> results;
  for (int i = 0; i < 50; ++i)
    results.push_back(pool.apply_async(sleep_ms, i % 5));
  EXPECT_THROW(pool.join(), mp::state_error);  // join without close
  pool.close();
  EXPECT_THROW(pool.apply(sleep_ms, 1), mp::state_error);
  EXPECT_THROW(pool.map(sleep_ms, std::vector<int>{1}), mp::state_error);
  pool.join();
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(results[i].ready());
    EXPECT_EQ(results[i].get(), i % 5);
  }
}

// 5
TEST_P(pool_faults, get_with_timeout_then_get) {
  mp::pool pool(options(1));
  auto r = pool.apply_async(sleep_ms, 600);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(r.get(200ms), mp::timeout_error);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 550ms);
  EXPECT_EQ(r.get(), 600);
}

// 6
TEST_P(pool_faults, maxtasksperchild_rotates_workers_without_hanging) {
  mp::pool pool(mp::pool_options{2, {}, 1, GetParam()});
  std::vector<mp::async_result<long>> results;
  for (int i = 0; i < 6; ++i)
    results.push_back(pool.apply_async(pid_of_worker, i));
  pool.close();
  pool.join();
  std::set<long> pids;
  for (auto& r : results)
    pids.insert(r.get());
  EXPECT_EQ(pids.size(), 6u);  // one task per worker: every task saw a fresh worker
}

// 7
TEST_P(pool_faults, failing_initializer_breaks_the_pool_clearly) {
  const auto before = multiproc_test::count_resources();
  const std::string path = multiproc_test::temporary_path("initializer-starts");
  constexpr unsigned slots = 2;
  const auto start = std::chrono::steady_clock::now();
  try {
    mp::pool pool(mp::pool_options{slots, mp::call(failing_initializer, path), 0, GetParam()});
    auto r = pool.apply_async(identity, 1);
    try {
      r.get(30s);
      ADD_FAILURE() << "expected the initializer's failure";
    } catch (const mp::state_error& e) {
      EXPECT_NE(std::string(e.what()).find("no database"), std::string::npos) << e.what();
    }
    // Later submits fail with the same error, at once.
    for (int i = 0; i < 3; ++i) {
      try {
        pool.apply_async(identity, 2);
        ADD_FAILURE() << "a submit to a broken pool should throw";
      } catch (const mp::state_error& e) {
        EXPECT_NE(std::string(e.what()).find("no database"), std::string::npos) << e.what();
      }
    }
  } catch (const mp::state_error& e) {
    // Reported at construction: just as clear.
    EXPECT_NE(std::string(e.what()).find("no database"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
  EXPECT_TRUE(multiproc_test::same_resources(before));  // every worker is gone by now
  // No respawn storm: at least one start, at most the give-up bound per slot.
  const int starts = count_lines(path);
  std::remove(path.c_str());
  EXPECT_GE(starts, 1);
  EXPECT_LE(starts, start_attempts_per_slot * static_cast<int>(slots));
}

// 8
void pool_in_a_child(std::string path, int method) {
  mp::pool pool(mp::pool_options{2, {}, 0, static_cast<mp::start_method>(method)});
  pool.map(report_and_sleep, std::vector<std::string>(2, path), 1);
}

TEST_P(pool_faults, workers_exit_when_their_parent_is_killed) {
  const std::string path = multiproc_test::temporary_path("orphans");
  mp::process parent(GetParam(), pool_in_a_child, path, static_cast<int>(GetParam()));
  parent.start();
  ASSERT_TRUE(multiproc_test::within(30s, [&] { return read_pids(path).size() == 2; }));
  const auto workers = read_pids(path);
  std::remove(path.c_str());
  parent.kill();
  parent.join();
  EXPECT_TRUE(multiproc_test::within(5s, [&] {
    for (long pid : workers) {
      if (multiproc_test::process_running(pid)) return false;
    }
    return true;
  })) << "a worker outlived its parent by more than 5 s";
}

// 9
struct throwing_range {
  struct iterator {
    int value = 0;
    using value_type = int;
    using difference_type = std::ptrdiff_t;
    int operator*() const {
      if (value == 7) throw std::out_of_range("item 7");
      return value;
    }
    iterator& operator++() {
      ++value;
      return *this;
    }
    bool operator!=(const iterator& other) const { return value != other.value; }
  };
  iterator begin() const { return {0}; }
  iterator end() const { return {20}; }
};

TEST_P(pool_faults, input_that_throws_propagates_and_the_pool_stays_usable) {
  mp::pool pool(options());
  EXPECT_THROW(pool.map(identity, throwing_range{}), std::out_of_range);
  EXPECT_THROW(pool.map_async(identity, throwing_range{}), std::out_of_range);
  EXPECT_THROW(
      {
        for ([[maybe_unused]] int v : pool.imap(identity, throwing_range{})) {
        }
      },
      std::out_of_range);
  EXPECT_EQ(pool.map(identity, std::vector<int>{1, 2}), (std::vector<int>{1, 2}));
}

// 10
TEST_P(pool_faults, decoding_failures_fail_only_their_task) {
  mp::pool pool(options());
  try {
    pool.apply(take_undecodable, undecodable{1});
    ADD_FAILURE() << "expected serialization_error";
  } catch (const mp::serialization_error& e) {
    EXPECT_EQ(e.where(), mp::serialization_error::phase::decode_arguments) << e.what();
  }
  try {
    pool.apply(make_undecodable, 2);
    ADD_FAILURE() << "expected serialization_error";
  } catch (const mp::serialization_error& e) {
    EXPECT_EQ(e.where(), mp::serialization_error::phase::decode_result) << e.what();
  }
  EXPECT_EQ(pool.apply(identity, 5), 5);
}

// 11
TEST_P(pool_faults, hundred_thousand_tiny_tasks_none_lost_or_doubled) {
  mp::pool pool(options());
  std::vector<int> input(multiproc_test::volume(100000));
  for (int i = 0; i < static_cast<int>(input.size()); ++i)
    input[i] = i;
  const auto mapped = pool.map(identity, input, 1);
  ASSERT_EQ(mapped, input);
  std::vector<mp::async_result<int>> results;
  results.reserve(input.size());
  for (int i : input)
    results.push_back(pool.apply_async(identity, i));
  for (int i : input)
    ASSERT_EQ(results[i].get(), i);
}

TEST_P(pool_faults, memory_does_not_grow_with_finished_tasks) {
#if defined(MULTIPROC_TEST_SANITIZED)
  GTEST_SKIP() << "a sanitizer's allocator quarantines freed memory; LeakSanitizer checks leaks";
#endif
  mp::pool pool(options());
  auto run_batch = [&] {
    for (int round = 0; round < 10; ++round) {
      std::vector<mp::async_result<int>> results;
      results.reserve(5000);
      for (int i = 0; i < 5000; ++i)
        results.push_back(pool.apply_async(identity, i));
      for (int i = 0; i < 5000; ++i)
        ASSERT_EQ(results[i].get(), i);
    }
  };
  run_batch();  // warm-up: allocator pools, buffers
  const std::size_t warm = multiproc_test::resident_bytes();
  for (int batch = 0; batch < 4; ++batch)
    run_batch();
  const std::size_t after = multiproc_test::resident_bytes();
  // 200 000 more tasks: a leak of even 100 bytes per task would show as 20 MB.
  EXPECT_LT(after, warm + (8u << 20)) << "resident memory grew from " << warm << " to " << after;
}

// 12
std::vector<char> touch_every_page(std::vector<char> v) {
  for (std::size_t i = 0; i < v.size(); i += 4096)
    v[i] = static_cast<char>(v[i] + 1);
  return v;
}

TEST_P(pool_faults, quarter_gigabyte_argument_and_result) {
  mp::pool pool(options(1));
  std::vector<char> big(256u << 20, 1);
  const auto back = pool.apply(touch_every_page, big);
  ASSERT_EQ(back.size(), big.size());
  EXPECT_EQ(back[0], 2);
  EXPECT_EQ(back[4096], 2);
  EXPECT_EQ(back[1], 1);
  EXPECT_EQ(back[back.size() - 1], 1);
}

TEST_P(pool_faults, pool_lifecycle_leaves_nothing_behind) {
  const auto before = multiproc_test::count_resources();
  for (int i = 0; i < 5; ++i) {
    mp::pool pool(options());
    EXPECT_EQ(pool.map(identity, std::vector<int>{1, 2, 3}), (std::vector<int>{1, 2, 3}));
    pool.apply_async(abort_on, 7);
    std::vector<char> payload(1 << 20, 1);
    EXPECT_EQ(pool.apply([](std::vector<char> v) { return v.size(); }, payload), payload.size());
  }
  EXPECT_TRUE(multiproc_test::same_resources(before));
}

// Found in review: each of these hung, crashed or lost work before it was fixed.

/// Records one worker start in `path`, then crashes.
void crashing_initializer(std::string path) {
  append_own_pid(path);
  std::abort();
}

TEST_P(pool_faults, crashing_initializer_breaks_the_pool_without_a_respawn_storm) {
  const std::string path = multiproc_test::temporary_path("crashing-starts");
  constexpr unsigned slots = 2;
  const auto start = std::chrono::steady_clock::now();
  try {
    mp::pool pool(mp::pool_options{slots, mp::call(crashing_initializer, path), 0, GetParam()});
    EXPECT_THROW(pool.apply_async(identity, 1).get(30s), mp::start_error);
    EXPECT_THROW(pool.apply_async(identity, 2), mp::start_error);
  } catch (const mp::start_error& e) {
    EXPECT_NE(std::string(e.what()).find("before it was ready"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
  const int starts = count_lines(path);
  std::remove(path.c_str());
  EXPECT_GE(starts, 1);
  EXPECT_LE(starts, start_attempts_per_slot * static_cast<int>(slots));
}

TEST_P(pool_faults, default_constructed_result_is_a_state_error) {
  mp::async_result<int> nothing;
  EXPECT_THROW((void)nothing.ready(), mp::state_error);
  EXPECT_THROW(nothing.get(), mp::state_error);
  EXPECT_THROW(nothing.wait(), mp::state_error);
}

TEST_P(pool_faults, imap_iterator_keeps_its_results_alive) {
  mp::pool pool(options());
  auto it = pool.imap(identity, std::vector<int>{1, 2, 3}).begin();  // the range is gone
  std::vector<int> seen;
  for (; !(it == std::default_sentinel); ++it)
    seen.push_back(*it);
  EXPECT_EQ(seen, (std::vector<int>{1, 2, 3}));
}

TEST_P(pool_faults, terminate_from_an_error_callback) {
  mp::pool pool(options());
  std::atomic<bool> called{false};
  auto r = pool.apply_async(boom, 1);
  r.then([](int) {},
         [&](std::exception_ptr) {
           pool.terminate();
           called = true;
         });
  ASSERT_TRUE(r.wait_for(30s));
  ASSERT_TRUE(multiproc_test::within(30s, [&] { return called.load(); }));
  EXPECT_THROW(pool.apply_async(identity, 1), mp::state_error);
}

TEST_P(pool_faults, join_and_terminate_from_two_threads) {
  for (int round = 0; round < 5; ++round) {
    mp::pool pool(options());
    auto r = pool.map_async(sleep_ms, std::vector<int>(4, 20), 1);
    pool.close();
    std::thread joiner([&] { pool.join(); });
    pool.terminate();
    joiner.join();
    EXPECT_TRUE(r.ready());
  }
}

std::vector<char> megabyte(int fill) {
  return std::vector<char>(1 << 20, static_cast<char>(fill));
}

TEST_P(pool_faults, shared_memory_results_survive_worker_rotation) {
  mp::pool pool(mp::pool_options{2, {}, 1, GetParam()});
  std::vector<mp::async_result<std::vector<char>>> results;
  for (int i = 0; i < 20; ++i)
    results.push_back(pool.apply_async(megabyte, i));
  for (int i = 0; i < 20; ++i) {
    const auto v = results[i].get(60s);
    ASSERT_EQ(v.size(), 1u << 20);
    EXPECT_EQ(v[12345], static_cast<char>(i));
  }
}

INSTANTIATE_TEST_SUITE_P(methods, pool_faults, ::testing::ValuesIn(multiproc_test::pool_methods()),
                         multiproc_test::method_name);

}  // namespace
