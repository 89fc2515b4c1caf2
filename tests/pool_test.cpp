// Conformance suite for mp::pool: the API, on every start method.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"
#include "targets.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;
using multiproc_test::point;

namespace {

int square(int x) {
  return x * x;
}
long add(long a, long b) {
  return a + b;
}
std::string shout(const std::string& s) {
  return s + "!";
}
point mirror(point p) {
  return point{p.y, p.x, p.label + "'"};
}
void nothing(int) {}
std::map<std::string, std::vector<int>> histogram(std::vector<std::string> words) {
  std::map<std::string, std::vector<int>> result;
  for (std::size_t i = 0; i < words.size(); ++i)
    result[words[i]].push_back(static_cast<int>(i));
  return result;
}
/// Returns 1 once `path` exists (created by the test: an event in another process, so it is
/// polled); 0 after a minute, as a hang guard.
int wait_for_file(std::string path) {
  for (int i = 0; i < 60000; ++i) {
    if (std::ifstream(path).good()) return 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return 0;
}

long worker_id(int) {
  return mp::this_process::id();
}
int nap_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
int slow_square(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(x % 3 * 10));
  return x * x;
}

using pool_conformance = multiproc_test::method_test;

TEST_P(pool_conformance, apply_apply_async_and_map) {
  mp::pool pool(options());
  EXPECT_EQ(pool.size(), 2u);
  mp::async_result<int> r = pool.apply_async(square, 7);
  EXPECT_EQ(pool.apply(square, 5), 25);
  EXPECT_EQ(r.get(), 49);
  EXPECT_EQ(r.get(), 49);  // a result can be read again
  EXPECT_TRUE(r.ready());
  EXPECT_TRUE(r.successful());
  EXPECT_EQ(pool.map(square, std::vector<int>{1, 2, 3}), (std::vector<int>{1, 4, 9}));
  pool.close();
  pool.join();
}

TEST_P(pool_conformance, std_and_user_types_travel_both_ways) {
  mp::pool pool(options());
  EXPECT_EQ(pool.apply(shout, std::string("hey")), "hey!");
  EXPECT_EQ(pool.apply(mirror, point{1, 2, "p"}), (point{2, 1, "p'"}));
  const auto h = pool.apply(histogram, std::vector<std::string>{"a", "b", "a"});
  EXPECT_EQ(h.at("a"), (std::vector<int>{0, 2}));
  EXPECT_EQ(h.at("b"), (std::vector<int>{1}));
  EXPECT_EQ(pool.apply(add, 40, 2), 42);
  EXPECT_EQ(pool.apply([](double x) { return x / 2; }, 3.0), 1.5);
}

TEST_P(pool_conformance, void_results) {
  mp::pool pool(options());
  mp::async_result<void> r = pool.apply_async(nothing, 1);
  r.get();
  EXPECT_TRUE(r.successful());
  pool.apply(nothing, 2);
}

TEST_P(pool_conformance, map_keeps_order_for_every_chunksize) {
  mp::pool pool(options());
  std::vector<int> input(1000);
  std::iota(input.begin(), input.end(), 0);
  std::vector<int> expected;
  for (int x : input)
    expected.push_back(x * x);
  for (std::size_t chunksize : {0u, 1u, 7u, 1000u, 5000u}) {
    EXPECT_EQ(pool.map(square, input, chunksize), expected) << "chunksize " << chunksize;
  }
  auto async = pool.map_async(slow_square, std::vector<int>{1, 2, 3, 4, 5, 6}, 1);
  EXPECT_EQ(async.get(), (std::vector<int>{1, 4, 9, 16, 25, 36}));
}

TEST_P(pool_conformance, map_takes_any_range) {
  mp::pool pool(options());
  const std::set<int> items{3, 1, 2};
  EXPECT_EQ(pool.map(square, items), (std::vector<int>{1, 4, 9}));
  const int array[] = {4, 5};
  EXPECT_EQ(pool.map(square, array), (std::vector<int>{16, 25}));
}

TEST_P(pool_conformance, starmap_unpacks_tuples_and_pairs) {
  mp::pool pool(options());
  const std::vector<std::tuple<long, long>> tuples{{1, 2}, {3, 4}};
  EXPECT_EQ(pool.starmap(add, tuples), (std::vector<long>{3, 7}));
  const std::vector<std::pair<long, long>> pairs{{10, 20}};
  EXPECT_EQ(pool.starmap_async(add, pairs).get(), (std::vector<long>{30}));
}

TEST_P(pool_conformance, imap_is_ordered_and_imap_unordered_is_complete) {
  mp::pool pool(options());
  std::vector<int> input(200);
  std::iota(input.begin(), input.end(), 0);
  std::vector<int> ordered;
  for (int v : pool.imap(slow_square, input))
    ordered.push_back(v);
  std::vector<int> expected;
  for (int x : input)
    expected.push_back(x * x);
  EXPECT_EQ(ordered, expected);

  std::vector<int> unordered;
  for (int v : pool.imap_unordered(slow_square, input, 3))
    unordered.push_back(v);
  std::sort(unordered.begin(), unordered.end());
  EXPECT_EQ(unordered, expected);
}

/// An endless input: counts how far it has been pulled.
struct counting_range {
  std::atomic<long>* pulled;
  struct iterator {
    std::atomic<long>* pulled;
    long value = 0;
    using value_type = int;
    using difference_type = std::ptrdiff_t;
    int operator*() const { return static_cast<int>(value); }
    iterator& operator++() {
      ++value;
      ++*pulled;
      return *this;
    }
    bool operator!=(std::default_sentinel_t) const { return true; }
  };
  iterator begin() const { return {pulled, 0}; }
  std::default_sentinel_t end() const { return {}; }
};

TEST_P(pool_conformance, imap_is_lazy_on_an_endless_input) {
  mp::pool pool(options());
  std::atomic<long> pulled{0};
  long seen = 0;
  for (int v : pool.imap(square, counting_range{&pulled}, 4)) {
    EXPECT_EQ(v, seen * seen);
    if (++seen == 100) break;
  }
  // Bounded look-ahead: a handful of chunks past what was consumed, never the whole input.
  EXPECT_LT(pulled.load(), 100 + 4 * 16);
}

TEST_P(pool_conformance, empty_inputs_give_empty_results_at_once) {
  mp::pool pool(options());
  const std::vector<int> none;
  EXPECT_TRUE(pool.map(square, none).empty());
  auto empty = pool.map_async(square, none);
  EXPECT_TRUE(empty.ready());  // at once: nothing was sent anywhere
  EXPECT_TRUE(empty.get().empty());
  EXPECT_TRUE(pool.starmap(add, std::vector<std::tuple<long, long>>{}).empty());
  for ([[maybe_unused]] int v : pool.imap(square, none))
    ADD_FAILURE();
  for ([[maybe_unused]] int v : pool.imap_unordered(square, none))
    ADD_FAILURE();
  // Empty or not, a closed pool takes no more work (as Python's raises "Pool not running").
  pool.close();
  EXPECT_THROW(pool.map(square, none), mp::state_error);
  EXPECT_THROW(pool.map_async(square, none), mp::state_error);
  EXPECT_THROW(pool.starmap(add, std::vector<std::tuple<long, long>>{}), mp::state_error);
  EXPECT_THROW(pool.imap(square, none), mp::state_error);
  EXPECT_THROW(pool.imap_unordered(square, none), mp::state_error);
  pool.join();
}

TEST_P(pool_conformance, callbacks_run_on_success_and_on_error) {
  mp::pool pool(options());
  std::mutex m;
  std::condition_variable cv;
  int value = 0;
  std::string error;
  pool.apply_async(square, 9).then([&](int v) {
    std::lock_guard<std::mutex> lock(m);
    value = v;
    cv.notify_all();
  });
  pool.apply_async([](int) -> int { throw std::logic_error("no"); }, 1)
      .then([](int) { ADD_FAILURE() << "success callback on a failure"; },
            [&](std::exception_ptr e) {
              try {
                std::rethrow_exception(e);
              } catch (const mp::remote_error& r) {
                std::lock_guard<std::mutex> lock(m);
                error = r.remote_type();
                cv.notify_all();
              }
            });
  std::unique_lock<std::mutex> lock(m);
  ASSERT_TRUE(cv.wait_for(lock, 30s, [&] { return value != 0 && !error.empty(); }));
  EXPECT_EQ(value, 81);
  EXPECT_EQ(error, "std::logic_error");
}

TEST_P(pool_conformance, callback_on_a_ready_result_runs_at_once) {
  mp::pool pool(options());
  auto r = pool.apply_async(square, 3);
  r.wait();
  int seen = 0;
  r.then([&](int v) { seen = v; });
  EXPECT_EQ(seen, 9);
}

TEST_P(pool_conformance, callback_may_close_and_join_its_pool) {
  const auto before = multiproc_test::count_resources();
  mp::pool pool(options());
  std::promise<void> joined;
  // Long enough that the callback is registered before the result arrives, so it runs on
  // the pool's own thread.
  pool.apply_async(nap_ms, 200).then([&](int) {
    pool.close();
    pool.join();
    joined.set_value();
  });
  ASSERT_EQ(joined.get_future().wait_for(30s), std::future_status::ready)  // hang guard
      << "close() + join() inside a callback did not return";
  EXPECT_THROW(pool.apply(square, 1), mp::state_error);
  pool.join();  // again, from this thread: returns at once
  EXPECT_TRUE(multiproc_test::same_resources(before));
}

TEST_P(pool_conformance, callback_join_while_the_owner_joins_neither_deadlocks_nor_leaves_workers) {
  mp::pool pool(options(1));
  const long worker_pid = pool.apply(worker_id, 0);
  std::atomic<bool> owner_joining{false};
  std::promise<void> callback_done;
  pool.apply_async(nap_ms, 100).then([&](int) {
    while (!owner_joining.load())
      std::this_thread::yield();  // the owner is about to join
    pool.join();  // closed already: requests the stop, returns (it cannot join itself)
    callback_done.set_value();
  });
  pool.close();
  owner_joining.store(true);
  auto joined = std::async(std::launch::async, [&] { pool.join(); });
  ASSERT_EQ(joined.wait_for(30s), std::future_status::ready)  // hang guard
      << "join() in the owner and in a callback at once deadlocked";
  EXPECT_EQ(callback_done.get_future().wait_for(0s), std::future_status::ready);
  // join() returned: every worker has exited and been reaped, nothing runs on in the back.
  EXPECT_FALSE(multiproc_test::process_running(worker_pid));
}

TEST_P(pool_conformance, callback_may_drop_its_pool_and_submitted_work_still_finishes) {
  const auto before = multiproc_test::count_resources();
  auto owner = std::make_unique<mp::pool>(options(1));
  // The second task is still running (on the only worker) when the first one's callback
  // destroys the pool: it must finish all the same, without the callback waiting for it.
  auto first = owner->apply_async(nap_ms, 200);
  auto second = owner->apply_async(nap_ms, 300);
  std::promise<void> dropped;
  first.then([&](int) {
    owner.reset();
    dropped.set_value();
  });
  ASSERT_EQ(dropped.get_future().wait_for(30s), std::future_status::ready)  // hang guard
      << "destroying the pool inside its callback did not return";
  EXPECT_EQ(second.get(30s), 300);
  EXPECT_TRUE(multiproc_test::same_resources(before));
}

TEST_P(pool_conformance, waiting_inside_a_callback_for_an_unfinished_result_is_a_state_error) {
  // Both tasks wait for files this test creates, so the order is certain: the callback is
  // registered before `first` ends (it runs on the pool's thread), and `second` cannot be
  // ready while the callback waits for it.
  const std::string first_may_end = multiproc_test::temporary_path("callback-first");
  const std::string second_may_end = multiproc_test::temporary_path("callback-second");
  mp::pool pool(options(1));
  auto first = pool.apply_async(wait_for_file, first_may_end);
  auto second = pool.apply_async(wait_for_file, second_may_end);  // after `first`
  std::promise<std::string> outcome;
  first.then([&](int) {
    try {
      second.get();
      outcome.set_value("returned");
    } catch (const mp::state_error&) {
      outcome.set_value("state_error");
    }
  });
  std::ofstream(first_may_end) << "go\n";
  auto future = outcome.get_future();
  ASSERT_EQ(future.wait_for(30s), std::future_status::ready);  // hang guard
  EXPECT_EQ(future.get(), "state_error");
  std::ofstream(second_may_end) << "go\n";
  EXPECT_EQ(second.get(), 1);  // outside the callback the wait works
  std::remove(first_may_end.c_str());
  std::remove(second_may_end.c_str());
}

TEST_P(pool_conformance, successful_before_ready_is_a_state_error) {
  mp::pool pool(options(1));
  auto slow = pool.apply_async(
      [](int ms) {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        return ms;
      },
      500);
  EXPECT_FALSE(slow.ready());
  EXPECT_THROW((void)slow.successful(), mp::state_error);
  EXPECT_FALSE(slow.wait_for(1ms));
  EXPECT_EQ(slow.get(), 500);
}

TEST_P(pool_conformance, timeouts_beyond_any_clock_wait_for_the_result) {
  mp::pool pool(options(1));
  auto r = pool.apply_async(slow_square, 2);  // 20 ms
  EXPECT_TRUE(r.wait_for(std::chrono::seconds::max()));
  EXPECT_EQ(r.get(std::chrono::hours::max()), 4);
  auto s = pool.apply_async(slow_square, 5);
  EXPECT_EQ(s.get(std::chrono::duration<double>(1e300)), 25);
  auto t = pool.apply_async(slow_square, 8);
  t.wait();
  EXPECT_TRUE(t.wait_for(std::chrono::seconds(-1)));  // ready: true even with no time at all
}

TEST_P(pool_conformance, default_size_is_cpu_count_and_zero_is_invalid) {
  EXPECT_THROW(mp::pool(0u), std::invalid_argument);
  mp::pool pool(mp::pool_options{0, {}, 0, GetParam()});
  EXPECT_EQ(pool.size(), mp::cpu_count());
}

TEST_P(pool_conformance, absurd_sizes_are_refused_naming_the_value) {
  const int minus_one = -1;
  try {
    mp::pool pool(static_cast<unsigned>(minus_one));  // what mp::pool(-1) compiles to
    ADD_FAILURE() << "mp::pool(-1) started " << pool.size() << " workers";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("4294967295"), std::string::npos) << e.what();
  }
  EXPECT_THROW(mp::pool(mp::pool_options{mp::max_pool_processes + 1, {}, 0, GetParam()}),
               std::invalid_argument);
}

TEST_P(pool_conformance, many_more_workers_than_cpus_work) {
  const unsigned workers = 200;
  mp::pool pool(options(workers));
  EXPECT_EQ(pool.size(), workers);
  std::vector<int> items(1000);
  for (int i = 0; i < 1000; ++i)
    items[i] = i;
  const std::vector<int> squares = pool.map(square, items, 1);
  for (int i = 0; i < 1000; ++i)
    ASSERT_EQ(squares[i], i * i);
}

TEST_P(pool_conformance, tasks_spread_over_workers) {
  mp::pool pool(options(2));
  std::set<long> pids;
  auto results = pool.map(
      [](int ms) {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        return mp::this_process::id();
      },
      std::vector<int>(8, 50), 1);
  pids.insert(results.begin(), results.end());
  EXPECT_EQ(pids.size(), 2u);
  EXPECT_EQ(pids.count(mp::this_process::id()), 0u);
}

int initialized_value = 0;
void set_initialized(int v) {
  initialized_value = v;
}
int read_initialized() {
  return initialized_value;
}

TEST_P(pool_conformance, initializer_runs_in_each_worker_first) {
  mp::pool pool(mp::pool_options{2, mp::call(set_initialized, 42), 0, GetParam()});
  const auto values = pool.map([](int) { return read_initialized(); }, std::vector<int>(20, 0), 1);
  EXPECT_EQ(values, std::vector<int>(20, 42));
}

TEST_P(pool_conformance, destructor_finishes_submitted_work) {
  mp::async_result<int> r;
  {
    mp::pool pool(options());
    r = pool.apply_async(slow_square, 2);
  }
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(r.get(), 4);
}

TEST_P(pool_conformance, large_argument_and_result_cross_by_shared_memory) {
  mp::pool pool(options());
  std::vector<char> big(8 << 20);
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>(i * 7);
  const auto echoed = pool.apply(
      [](std::vector<char> v) {
        for (auto& c : v)
          c = static_cast<char>(c + 1);
        return v;
      },
      big);
  ASSERT_EQ(echoed.size(), big.size());
  for (std::size_t i = 0; i < big.size(); i += 4093) {
    ASSERT_EQ(echoed[i], static_cast<char>(big[i] + 1)) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(methods, pool_conformance,
                         ::testing::ValuesIn(multiproc_test::pool_methods()),
                         multiproc_test::method_name);

}  // namespace
