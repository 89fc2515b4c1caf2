// Scheduling: no task waits behind a blocked one while another worker is free, whatever the
// pool learned before (it sends tiny tasks several at a time to each worker). Tasks here wait
// for each other through files, as tasks talking through queues or barriers would; every wait
// has a generous limit only so a failing pool cannot hang the suite, and the task reports
// whether what it waited for happened.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

int tiny(int x) {
  return x + 1;
}

bool file_exists(const std::string& path) {
  return std::ifstream(path).good();
}

/// Waits (up to `limit_ms`) until `path` exists; true if it did.
bool wait_for_file(std::string path, int limit_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(limit_ms);
  while (!file_exists(path)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

void make_file(std::string path) {
  std::ofstream(path) << "here\n";
}

/// The workload of the reproduction: a task that takes a while without waiting for anyone.
void nap(int milliseconds) {
  std::this_thread::sleep_for(std::chrono::milliseconds(milliseconds));
}

/// One party of a barrier made of files: announces itself, then waits (up to `limit_ms`) until
/// all `parties` have; true if they did.
bool barrier_party(std::string stem, int party, int parties, int limit_ms) {
  make_file(stem + "." + std::to_string(party));
  for (int other = 0; other < parties; ++other) {
    if (!wait_for_file(stem + "." + std::to_string(other), limit_ms)) return false;
  }
  return true;
}

/// The payload back, its last byte one more than its first.
std::vector<char> mark_last(std::vector<char> payload) {
  payload.back() = static_cast<char>(payload.front() + 1);
  return payload;
}

/// Tasks whose argument and result (256 KiB each) travel in shared blocks, each its own fill
/// (from `first`).
std::vector<mp::async_result<std::vector<char>>> submit_large_tasks(mp::pool& pool, int first,
                                                                    int count) {
  std::vector<mp::async_result<std::vector<char>>> results;
  for (int i = first; i < first + count; ++i)
    results.push_back(
        pool.apply_async(mark_last, std::vector<char>(256 * 1024, static_cast<char>(i))));
  return results;
}

void expect_large_results(const std::vector<mp::async_result<std::vector<char>>>& results,
                          int first) {
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto fill = static_cast<char>(first + static_cast<int>(i));
    const std::vector<char> back = results[i].get();
    ASSERT_EQ(back.size(), std::size_t{256 * 1024}) << "task " << i;
    EXPECT_EQ(back.front(), fill) << "task " << i << " got another's payload";
    EXPECT_EQ(back.back(), static_cast<char>(fill + 1)) << "task " << i;
  }
}

/// 20 000 tiny tasks: afterwards the pool believes tasks are tiny and batches them.
void teach_tiny_tasks(mp::pool& pool) {
  std::vector<mp::async_result<int>> results;
  results.reserve(20000);
  for (int i = 0; i < 20000; ++i)
    results.push_back(pool.apply_async(tiny, i));
  for (int i = 0; i < 20000; ++i)
    ASSERT_EQ(results[static_cast<std::size_t>(i)].get(), i + 1);
}

/// Tiny tasks submitted and not waited for: the pool is busy with them when what follows is
/// submitted, so that lands in whatever per-worker queues have room.
std::vector<mp::async_result<int>> keep_busy_with_tiny_tasks(mp::pool& pool, int count) {
  std::vector<mp::async_result<int>> results;
  results.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i)
    results.push_back(pool.apply_async(tiny, i));
  return results;
}

void expect_tiny_results(const std::vector<mp::async_result<int>>& results) {
  for (std::size_t i = 0; i < results.size(); ++i)
    EXPECT_EQ(results[i].get(), static_cast<int>(i) + 1);
}

constexpr int rounds = 3;
/// Far above what any correct schedule needs (a fraction of a second): only a hang guard.
constexpr int limit_ms = 10000;

using pool_scheduling = multiproc_test::method_test;

TEST_P(pool_scheduling, a_task_queued_behind_a_blocked_one_runs_on_the_worker_that_frees_up) {
  // The reproduction of the issue: `waiter` blocks until `maker` has run; `nap` keeps the
  // other worker busy for a while first. Without rebalancing, `maker` sat behind `waiter` on
  // its worker and `waiter` waited its full limit.
  mp::pool pool(options(2));
  for (int round = 0; round < rounds; ++round) {
    teach_tiny_tasks(pool);
    const std::string path = multiproc_test::temporary_path("made");
    auto waiter = pool.apply_async(wait_for_file, path, limit_ms);
    auto napper = pool.apply_async(nap, 300);
    auto maker = pool.apply_async(make_file, path);
    EXPECT_TRUE(waiter.get()) << "round " << round << ": the maker never ran while it waited";
    maker.get();
    napper.get();
    std::remove(path.c_str());
  }
}

TEST_P(pool_scheduling, a_consumer_submitted_before_its_producer_on_a_busy_pool_never_deadlocks) {
  // Both are submitted while tiny tasks still flow, so both tend to land in the queue of
  // whichever worker makes room first: the consumer must not keep the producer waiting.
  mp::pool pool(options(2));
  for (int round = 0; round < rounds; ++round) {
    teach_tiny_tasks(pool);
    const auto busy = keep_busy_with_tiny_tasks(pool, 2000);
    const std::string path = multiproc_test::temporary_path("produced");
    auto consumer = pool.apply_async(wait_for_file, path, limit_ms);
    auto producer = pool.apply_async(make_file, path);
    EXPECT_TRUE(consumer.get()) << "round " << round;
    producer.get();
    expect_tiny_results(busy);
    std::remove(path.c_str());
  }
}

TEST_P(pool_scheduling, four_barrier_parties_meet_on_a_pool_of_four) {
  constexpr int parties = 4;
  mp::pool pool(options(parties));
  for (int round = 0; round < rounds; ++round) {
    teach_tiny_tasks(pool);
    const auto busy = keep_busy_with_tiny_tasks(pool, 2000);
    const std::string stem = multiproc_test::temporary_path("barrier");
    std::vector<mp::async_result<bool>> met;
    for (int party = 0; party < parties; ++party)
      met.push_back(pool.apply_async(barrier_party, stem, party, parties, limit_ms));
    for (int party = 0; party < parties; ++party)
      EXPECT_TRUE(met[static_cast<std::size_t>(party)].get()) << "round " << round;
    expect_tiny_results(busy);
    for (int party = 0; party < parties; ++party)
      std::remove((stem + "." + std::to_string(party)).c_str());
  }
}

TEST_P(pool_scheduling, tiny_tasks_after_rebalancing_all_run_exactly_once) {
  // Take-backs happen while thousands of tiny tasks flow: every result arrives once, right.
  mp::pool pool(options(2));
  teach_tiny_tasks(pool);
  const std::string path = multiproc_test::temporary_path("made");
  auto waiter = pool.apply_async(wait_for_file, path, limit_ms);
  const auto results = keep_busy_with_tiny_tasks(pool, 5000);
  auto maker = pool.apply_async(make_file, path);
  EXPECT_TRUE(waiter.get());
  expect_tiny_results(results);
  maker.get();
  std::remove(path.c_str());
}

TEST_P(pool_scheduling, large_tasks_taken_back_run_once_with_their_own_payloads) {
  // Arguments and results over the spill threshold travel in shared blocks, which the portable
  // POSIX build hands over as descriptors riding with the frames. Tasks queued behind the
  // blocked waiter are taken back and run on the other worker; the waiter's worker skips their
  // frames, and the tasks it runs afterwards must still find their own blocks.
  mp::pool pool(options(2));
  teach_tiny_tasks(pool);
  const std::string path = multiproc_test::temporary_path("made");
  auto waiter = pool.apply_async(wait_for_file, path, limit_ms);
  auto napper = pool.apply_async(nap, 300);  // the other worker is busy while tasks queue up
  auto queued = submit_large_tasks(pool, 0, 40);
  auto maker = pool.apply_async(make_file, path);
  EXPECT_TRUE(waiter.get()) << "the maker never ran while the waiter waited";
  expect_large_results(queued, 0);
  maker.get();
  napper.get();
  // Both workers take these; fills unlike the first batch's, so a stale block shows.
  expect_large_results(submit_large_tasks(pool, 40, 40), 40);
  std::remove(path.c_str());
}

INSTANTIATE_TEST_SUITE_P(methods, pool_scheduling,
                         ::testing::ValuesIn(multiproc_test::pool_methods()),
                         multiproc_test::method_name);

}  // namespace
