// Conformance suite for waiting on many results, cancelling, and progress (issue 14):
// async_result::cancel, pool::close(mp::cancel_pending), mp::wait, mp::as_completed,
// async_result's item counts and to_future, mp::progress's ranges. On every start method.
//
// Nothing here is ordered by sleeping: a task that must not finish yet waits for a message on
// a pipe the test holds (a gate), and a task that must have started says so on another pipe.
// Timeouts appear only as hang guards.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

/// How long any wait here may take before the test calls it a hang.
constexpr auto hang_guard = 120s;

int square(int x) {
  return x * x;
}
int fail_now(int) {
  throw std::runtime_error("failed on purpose");
}
/// Returns `value` once the test sends a message on the gate's other end (or closes it).
int gated(mp::connection gate, int value) {
  try {
    (void)gate.recv<int>();
  } catch (const mp::closed_error&) {
  }
  return value;
}
/// Says it has started (sends `value` on `started`), then waits at its gate.
int announced_gated(mp::connection started, mp::connection gate, int value) {
  started.send(value);
  return gated(gate, value);
}
/// The task that must never run: it leaves a file behind.
int touch(std::string path) {
  std::ofstream(path) << "ran\n";
  return 1;
}
int identity(int x) {
  return x;
}

bool exists(const std::string& path) {
  return std::filesystem::exists(path);
}

/// A gate (tasks wait at its reader) and a pipe on which tasks say they have started.
struct gates {
  std::pair<mp::connection, mp::connection> gate = mp::pipe(false);
  std::pair<mp::connection, mp::connection> started = mp::pipe(false);
  mp::connection& gate_reader() { return gate.first; }
  mp::connection& started_writer() { return started.second; }
  /// Lets `count` tasks through.
  void open(int count = 1) {
    for (int i = 0; i < count; ++i)
      gate.second.send(i);
  }
  /// Waits until `count` tasks have said they started.
  void await_started(int count = 1) {
    for (int i = 0; i < count; ++i) {
      ASSERT_TRUE(started.first.poll(hang_guard)) << "a task never started";
      (void)started.first.recv<int>();
    }
  }
  /// True if some task has said it started and not been counted.
  bool more_started() { return started.first.poll(); }
};

/// A pool that has measured tiny tasks, so it sends each worker several at once: tasks then
/// wait in a worker's channel, where only the claim ledger can take them back.
void teach_tiny_tasks(mp::pool& pool) {
  std::vector<int> xs(2000);
  std::iota(xs.begin(), xs.end(), 0);
  (void)pool.map(square, xs, 1);
}

/// mp::wait under a hang guard: fails the test if it only returned because the guard ran out.
mp::wait_result guarded_wait(const std::vector<mp::async_result<int>>& results,
                             mp::return_when when) {
  const auto start = std::chrono::steady_clock::now();
  auto result = mp::wait(results, when, hang_guard);
  EXPECT_LT(std::chrono::steady_clock::now() - start, hang_guard) << "mp::wait hung";
  return result;
}

std::vector<std::size_t> positions(std::size_t first, std::size_t last) {
  std::vector<std::size_t> out(last - first);
  std::iota(out.begin(), out.end(), first);
  return out;
}

using futures_conformance = multiproc_test::method_test;

// ---- cancel ---------------------------------------------------------------------------------

TEST_P(futures_conformance, cancel_of_a_queued_task_never_runs_it) {
  mp::pool pool(options(1));
  gates g;
  auto blocker = pool.apply_async(announced_gated, g.started_writer(), g.gate_reader(), 5);
  g.await_started();
  const std::string path = multiproc_test::temporary_path("cancelled-queued");
  auto doomed = pool.apply_async(touch, path);
  EXPECT_FALSE(doomed.cancelled());
  EXPECT_TRUE(doomed.cancel());
  EXPECT_TRUE(doomed.cancelled());
  EXPECT_TRUE(doomed.ready());  // at once: it has nothing left to wait for
  EXPECT_FALSE(doomed.successful());
  EXPECT_THROW(doomed.get(), mp::cancelled_error);
  EXPECT_TRUE(doomed.cancel()) << "cancelling again still says it is cancelled";
  g.open();
  EXPECT_EQ(blocker.get(), 5);
  pool.close();
  pool.join();
  EXPECT_FALSE(exists(path)) << "a cancelled task ran";
}

TEST_P(futures_conformance, cancel_takes_back_tasks_waiting_in_a_workers_channel) {
  mp::pool pool(options(1));
  teach_tiny_tasks(pool);
  gates g;
  auto blocker = pool.apply_async(announced_gated, g.started_writer(), g.gate_reader(), 5);
  g.await_started();
  // The pool sends these straight into the busy worker's channel, behind the blocker.
  const std::string path = multiproc_test::temporary_path("cancelled-in-channel");
  std::vector<mp::async_result<int>> doomed;
  for (int i = 0; i < 20; ++i)
    doomed.push_back(pool.apply_async(touch, path));
  for (auto& r : doomed) {
    EXPECT_TRUE(r.cancel());
    EXPECT_THROW(r.get(), mp::cancelled_error);
  }
  g.open();
  EXPECT_EQ(blocker.get(), 5);
  // The worker answers the frames it was sent with "skipped", and works on.
  EXPECT_EQ(pool.apply(square, 6), 36);
  pool.close();
  pool.join();
  EXPECT_FALSE(exists(path)) << "a cancelled task ran";
}

TEST_P(futures_conformance, cancel_of_a_running_or_finished_task_returns_false) {
  mp::pool pool(options(1));
  gates g;
  auto running = pool.apply_async(announced_gated, g.started_writer(), g.gate_reader(), 7);
  g.await_started();
  EXPECT_FALSE(running.cancel());
  EXPECT_FALSE(running.cancelled());
  g.open();
  EXPECT_EQ(running.get(), 7);
  EXPECT_FALSE(running.cancel());
  auto failed = pool.apply_async(fail_now, 1);
  failed.wait();
  EXPECT_FALSE(failed.cancel());
  EXPECT_THROW(failed.get(), mp::remote_error);
}

TEST_P(futures_conformance, cancel_of_a_map_async_cancels_its_chunks) {
  mp::pool pool(options(1));
  gates g;
  auto blocker = pool.apply_async(announced_gated, g.started_writer(), g.gate_reader(), 5);
  g.await_started();
  const std::string path = multiproc_test::temporary_path("cancelled-map");
  auto doomed = pool.map_async(touch, std::vector<std::string>(20, path), 3);
  EXPECT_EQ(doomed.items_total(), 20u);
  EXPECT_EQ(doomed.items_done(), 0u);
  EXPECT_TRUE(doomed.cancel());
  EXPECT_TRUE(doomed.ready());
  EXPECT_EQ(doomed.items_done(), 20u);  // done means settled: cancelled chunks count
  EXPECT_THROW(doomed.get(), mp::cancelled_error);
  g.open();
  EXPECT_EQ(blocker.get(), 5);
  pool.close();
  pool.join();
  EXPECT_FALSE(exists(path)) << "a chunk of a cancelled map ran";
}

TEST_P(futures_conformance, cancel_of_a_map_async_lets_its_running_chunk_finish) {
  mp::pool pool(options(1));
  gates g;
  std::vector<std::tuple<mp::connection, mp::connection, int>> items;
  for (int i = 0; i < 3; ++i)
    items.emplace_back(g.started_writer(), g.gate_reader(), i);
  auto partly = pool.starmap_async(announced_gated, items, 1);
  g.await_started();  // chunk 0 runs; chunks 1 and 2 wait
  EXPECT_TRUE(partly.cancel());
  EXPECT_TRUE(partly.cancelled());
  EXPECT_FALSE(partly.ready()) << "its first chunk is still running";
  EXPECT_EQ(partly.items_done(), 2u);
  g.open();
  ASSERT_TRUE(partly.wait_for(hang_guard));
  EXPECT_EQ(partly.items_done(), 3u);
  EXPECT_THROW(partly.get(), mp::cancelled_error);
  pool.close();
  pool.join();
  EXPECT_FALSE(g.more_started()) << "a cancelled chunk started";
}

TEST_P(futures_conformance, close_cancel_pending_cancels_ten_thousand_queued_tasks_at_once) {
  mp::pool pool(options(2));
  teach_tiny_tasks(pool);  // so that some of them wait in the workers' channels too
  gates g;
  auto first = pool.apply_async(announced_gated, g.started_writer(), g.gate_reader(), 1);
  auto second = pool.apply_async(announced_gated, g.started_writer(), g.gate_reader(), 2);
  g.await_started(2);  // both workers are busy until the gate opens
  const std::string path = multiproc_test::temporary_path("cancelled-pending");
  std::vector<mp::async_result<int>> doomed;
  doomed.reserve(10000);
  for (int i = 0; i < 10000; ++i)
    doomed.push_back(pool.apply_async(touch, path));
  // Returns without waiting for the running tasks: the gate is still closed.
  auto closing = std::async(std::launch::async, [&] { return pool.close(mp::cancel_pending); });
  ASSERT_EQ(closing.wait_for(hang_guard), std::future_status::ready) << "close waited";
  EXPECT_EQ(closing.get(), 10000u);
  EXPECT_FALSE(first.ready());
  for (auto& r : doomed) {
    ASSERT_TRUE(r.ready());
    ASSERT_TRUE(r.cancelled());
  }
  EXPECT_THROW(doomed.back().get(), mp::cancelled_error);
  EXPECT_THROW(pool.apply_async(square, 1), mp::state_error);
  EXPECT_EQ(pool.close(mp::cancel_pending), 0u) << "nothing is left to cancel";
  g.open(2);
  EXPECT_EQ(first.get(), 1);
  EXPECT_EQ(second.get(), 2);
  pool.join();
  EXPECT_FALSE(exists(path)) << "a cancelled task ran";
}

TEST_P(futures_conformance, a_cancelled_task_lets_the_queue_behind_it_run) {
  mp::pool pool(options(1));
  gates g;
  auto blocker = pool.apply_async(announced_gated, g.started_writer(), g.gate_reader(), 0);
  g.await_started();
  std::vector<mp::async_result<int>> results;
  for (int i = 0; i < 30; ++i)
    results.push_back(pool.apply_async(identity, i));
  // In no particular order: husks at both ends of the queue and in its middle.
  const std::vector<int> order{15, 0, 29, 3, 6, 27, 9, 12, 18, 21, 24, 28};
  const std::set<int> cancelled(order.begin(), order.end());
  for (int i : order)
    EXPECT_TRUE(results[static_cast<std::size_t>(i)].cancel());
  g.open();
  for (int i = 0; i < 30; ++i) {
    if (cancelled.count(i) != 0) {
      EXPECT_THROW(results[static_cast<std::size_t>(i)].get(), mp::cancelled_error);
    } else {
      EXPECT_EQ(results[static_cast<std::size_t>(i)].get(), i);
    }
  }
  EXPECT_EQ(blocker.get(), 0);
}

// ---- wait -----------------------------------------------------------------------------------

/// 1000 results of two pools: pool `a` (2 workers) holds two gated tasks, then 498 squares
/// queued behind them; pool `b` (1 worker) holds at position 500 the task `b500` (submitted
/// first, so its worker runs it first), then a gated task at 501 and squares. Until the gate
/// opens, nothing but position 500 can finish.
struct two_pools {
  explicit two_pools(const mp::pool_options& a_options, const mp::pool_options& b_options)
      : a(a_options), b(b_options) {}
  template <class Make500>
  void submit(Make500 make_500) {
    results.resize(1000);
    results[0] = a.apply_async(gated, g.gate_reader(), 0);
    results[1] = a.apply_async(gated, g.gate_reader(), 1);
    for (int i = 2; i < 500; ++i)
      results[static_cast<std::size_t>(i)] = a.apply_async(square, i);
    results[500] = make_500(b);
    results[501] = b.apply_async(gated, g.gate_reader(), 501);
    for (int i = 502; i < 1000; ++i)
      results[static_cast<std::size_t>(i)] = b.apply_async(square, i);
  }
  mp::pool a;
  mp::pool b;
  gates g;
  std::vector<mp::async_result<int>> results;
};

TEST_P(futures_conformance, wait_first_completed_returns_with_the_first_of_two_pools) {
  two_pools p(options(2), options(1));
  gates fast;  // position 500 waits at a gate of its own
  p.submit([&](mp::pool& b) { return b.apply_async(gated, fast.gate_reader(), 500); });
  EXPECT_EQ(mp::wait(p.results, mp::return_when::first_completed, 0s).done.size(), 0u);
  fast.open();
  const auto [done, not_done] = guarded_wait(p.results, mp::return_when::first_completed);
  EXPECT_EQ(done, (std::vector<std::size_t>{500}));
  EXPECT_EQ(not_done.size(), 999u);
  EXPECT_EQ(p.results[500].get(), 500);
  // Nothing failed: first_exception waits for all, so with a zero timeout it is the same.
  EXPECT_EQ(mp::wait(p.results, mp::return_when::first_exception, 0ms).done,
            (std::vector<std::size_t>{500}));
  p.g.open(3);
  const auto all = guarded_wait(p.results, mp::return_when::all_completed);
  EXPECT_EQ(all.done, positions(0, 1000));
  EXPECT_TRUE(all.not_done.empty());
  for (std::size_t i = 2; i < 1000; ++i) {
    if (i == 500 || i == 501) continue;
    ASSERT_EQ(p.results[i].get(), static_cast<int>(i * i));
  }
}

TEST_P(futures_conformance, wait_first_exception_passes_a_success_and_stops_at_a_failure) {
  two_pools p(options(2), options(1));
  // Position 500 succeeds at once; then b's worker runs a failing task before it reaches the
  // gated one. first_exception must not stop at 500's success.
  std::vector<mp::async_result<int>> extra;
  p.submit([&](mp::pool& b) {
    auto ok = b.apply_async(square, 500);
    extra.push_back(b.apply_async(fail_now, 0));
    return ok;
  });
  std::vector<mp::async_result<int>> results = p.results;
  results.push_back(extra.front());  // position 1000: the failure
  const auto [done, not_done] = guarded_wait(results, mp::return_when::first_exception);
  EXPECT_EQ(done, (std::vector<std::size_t>{500, 1000}));
  EXPECT_EQ(not_done.size(), 999u);
  EXPECT_THROW(results[1000].get(), mp::remote_error);
  p.g.open(3);
  EXPECT_EQ(guarded_wait(results, mp::return_when::all_completed).done.size(), 1001u);
}

TEST_P(futures_conformance, wait_over_nothing_or_ready_results_returns_at_once) {
  mp::pool pool(options(1));
  EXPECT_TRUE(mp::wait(std::vector<mp::async_result<int>>{}).done.empty());
  auto a = pool.apply_async(square, 2);
  auto b = pool.apply_async(square, 3);
  const auto [done, not_done] = mp::wait({a, b});
  EXPECT_EQ(done, (std::vector<std::size_t>{0, 1}));
  EXPECT_TRUE(not_done.empty());
  std::vector<mp::async_result<int>> with_empty{a, mp::async_result<int>()};
  EXPECT_THROW(mp::wait(with_empty), mp::state_error);
}

TEST_P(futures_conformance, wait_sees_a_cancelled_result_as_done) {
  mp::pool pool(options(1));
  gates g;
  auto blocker = pool.apply_async(announced_gated, g.started_writer(), g.gate_reader(), 0);
  g.await_started();
  auto queued = pool.apply_async(square, 4);
  auto waiting = std::async(std::launch::async, [&] {
    return mp::wait({blocker, queued}, mp::return_when::first_completed, hang_guard);
  });
  EXPECT_TRUE(queued.cancel());
  ASSERT_EQ(waiting.wait_for(hang_guard), std::future_status::ready);
  EXPECT_EQ(waiting.get().done, (std::vector<std::size_t>{1}));
  g.open();
  EXPECT_EQ(blocker.get(), 0);
}

// ---- as_completed ---------------------------------------------------------------------------

TEST_P(futures_conformance, as_completed_yields_in_the_order_results_complete) {
  mp::pool a(options(2));
  mp::pool b(options(2));
  gates g0, g1, g2;
  std::vector<mp::async_result<int>> results(4);
  results[3] = b.apply_async(square, 3);
  results[3].wait();  // complete before as_completed is called: it comes first
  results[0] = a.apply_async(gated, g0.gate_reader(), 0);
  results[1] = a.apply_async(gated, g1.gate_reader(), 1);
  results[2] = b.apply_async(gated, g2.gate_reader(), 2);
  auto completed = mp::as_completed(results);
  EXPECT_EQ(completed.size(), 4u);
  auto it = completed.begin();
  ASSERT_NE(it, completed.end());
  EXPECT_EQ(*it, 3u);
  g2.open();
  ++it;
  EXPECT_EQ(*it, 2u);
  g0.open();
  EXPECT_EQ(*it++, 2u);
  EXPECT_EQ(*it, 0u);
  g1.open();
  ++it;
  EXPECT_EQ(*it, 1u);
  EXPECT_EQ(results[*it].get(), 1);
  ++it;
  EXPECT_EQ(it, completed.end());
}

/// A task `length` steps long: it waits at its gate (opened by the test once the task one step
/// shorter has been yielded), leaves its file, and returns its length.
int stepped(mp::connection gate, std::string path, int length) {
  (void)gated(gate, 0);
  std::ofstream(path) << length << "\n";
  return length;
}

TEST_P(futures_conformance, as_completed_follows_known_task_lengths) {
  // Six tasks over two pools, every one on a worker of its own; their lengths in scrambled
  // order. The test opens the gate of length n + 1 only once as_completed has yielded length
  // n, so each task's file exists when it is yielded, and no longer task's file does yet.
  mp::pool a(options(3));
  mp::pool b(options(3));
  const std::vector<int> lengths{3, 0, 5, 1, 4, 2};
  std::vector<gates> step(lengths.size());
  std::vector<std::string> files;
  std::vector<mp::async_result<int>> results;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    const auto length = static_cast<std::size_t>(lengths[i]);
    files.push_back(multiproc_test::temporary_path("length-" + std::to_string(length)));
    results.push_back(
        (i % 2 == 0 ? a : b)
            .apply_async(stepped, step[length].gate_reader(), files.back(), lengths[i]));
  }
  step[0].open();
  std::vector<int> yielded;
  for (std::size_t i : mp::as_completed(results, hang_guard)) {
    const int length = results[i].get();
    EXPECT_EQ(length, lengths[i]);
    EXPECT_TRUE(exists(files[i])) << "yielded before its task finished";
    for (std::size_t j = 0; j < lengths.size(); ++j) {
      if (lengths[j] > length) {
        EXPECT_FALSE(exists(files[j])) << "a longer task finished first";
      }
    }
    yielded.push_back(length);
    if (static_cast<std::size_t>(length) + 1 < step.size())
      step[static_cast<std::size_t>(length) + 1].open();
  }
  EXPECT_EQ(yielded, (std::vector<int>{0, 1, 2, 3, 4, 5}));
  for (const auto& f : files)
    std::filesystem::remove(f);
}

TEST_P(futures_conformance, as_completed_in_a_loop_and_left_early) {
  mp::pool a(options(2));
  mp::pool b(options(1));
  std::vector<mp::async_result<int>> results;
  for (int i = 0; i < 200; ++i)
    results.push_back((i % 2 == 0 ? a : b).apply_async(square, i));
  std::vector<std::size_t> seen;
  for (std::size_t i : mp::as_completed(results)) {
    EXPECT_TRUE(results[i].ready());
    EXPECT_EQ(results[i].get(), static_cast<int>(i * i));
    seen.push_back(i);
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, positions(0, 200));

  // Leaving early stops watching: the results that complete later tell no one.
  gates g;
  std::vector<mp::async_result<int>> later{a.apply_async(gated, g.gate_reader(), 1),
                                           b.apply_async(square, 2)};
  for (std::size_t i : mp::as_completed(later)) {
    EXPECT_EQ(i, 1u);
    break;
  }
  g.open();
  EXPECT_EQ(later[0].get(), 1);
}

TEST_P(futures_conformance, as_completed_throws_timeout_error_past_its_deadline) {
  mp::pool pool(options(2));
  gates g;
  std::vector<mp::async_result<int>> results{pool.apply_async(square, 5),
                                             pool.apply_async(gated, g.gate_reader(), 1)};
  results[0].wait();
  auto completed = mp::as_completed(results, 0ms);
  auto it = completed.begin();
  EXPECT_EQ(*it, 0u);
  EXPECT_THROW(++it, mp::timeout_error);
  g.open();
  EXPECT_EQ(results[1].get(), 1);
}

// ---- item counts, std::future ---------------------------------------------------------------

TEST_P(futures_conformance, a_map_async_result_counts_its_items) {
  mp::pool pool(options(1));
  gates g;
  auto blocker = pool.apply_async(announced_gated, g.started_writer(), g.gate_reader(), 0);
  g.await_started();
  auto squares = pool.map_async(square, std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 3);
  EXPECT_EQ(squares.items_total(), 10u);
  EXPECT_EQ(squares.items_done(), 0u);
  EXPECT_EQ(blocker.items_total(), 1u);
  EXPECT_EQ(blocker.items_done(), 0u);
  g.open();
  ASSERT_TRUE(squares.wait_for(hang_guard));
  EXPECT_EQ(squares.items_done(), 10u);
  EXPECT_EQ(blocker.items_done(), 1u);
  auto none = pool.map_async(square, std::vector<int>{});
  EXPECT_EQ(none.items_total(), 0u);
  EXPECT_EQ(none.items_done(), 0u);
}

TEST_P(futures_conformance, to_future_gets_the_value_or_the_error) {
  mp::pool pool(options(1));
  std::future<int> value = pool.apply_async(square, 7).to_future();
  std::future<std::vector<int>> values = pool.map_async(square, std::vector<int>{1, 2}).to_future();
  std::future<int> failure = pool.apply_async(fail_now, 1).to_future();
  ASSERT_EQ(value.wait_for(hang_guard), std::future_status::ready);
  EXPECT_EQ(value.get(), 49);
  EXPECT_EQ(values.get(), (std::vector<int>{1, 4}));
  EXPECT_THROW(failure.get(), mp::remote_error);

  gates g;
  auto blocker = pool.apply_async(announced_gated, g.started_writer(), g.gate_reader(), 0);
  g.await_started();
  auto queued = pool.apply_async(square, 3);
  std::future<int> cancelled = queued.to_future();
  EXPECT_TRUE(queued.cancel());
  EXPECT_THROW(cancelled.get(), mp::cancelled_error);
  g.open();
  EXPECT_EQ(blocker.to_future().get(), 0);
}

// ---- progress (what it prints is checked in posix_progress_test.cpp) -------------------------

TEST_P(futures_conformance, progress_passes_every_item_through) {
  mp::pool pool(options(2));
  std::vector<int> xs(100);
  std::iota(xs.begin(), xs.end(), 0);
  const mp::progress_options quiet{.enabled = false};
  std::vector<int> ordered;
  for (int v : mp::progress(pool.imap(square, xs), quiet))
    ordered.push_back(v);
  std::vector<int> expected;
  for (int x : xs)
    expected.push_back(x * x);
  EXPECT_EQ(ordered, expected);
  long sum = 0;
  for (int v : mp::progress(pool.imap_unordered(square, xs, 7), quiet))
    sum += v;
  EXPECT_EQ(sum, std::accumulate(expected.begin(), expected.end(), 0L));
  EXPECT_EQ(mp::progress(pool.map_async(square, xs), quiet).get(), expected);
  // Leaving early, and an exception from the loop body, end the iteration cleanly.
  int seen = 0;
  for (int v : mp::progress(pool.imap(square, xs), quiet)) {
    EXPECT_EQ(v, seen * seen);
    if (++seen == 10) break;
  }
  EXPECT_THROW(
      {
        for (int v : mp::progress(pool.imap(square, xs), quiet)) {
          if (v == 25) throw std::logic_error("the loop body failed");
        }
      },
      std::logic_error);
  // A failed item rethrows from *it, as without progress.
  auto failing = mp::progress(pool.imap(fail_now, std::vector<int>{1}), quiet);
  EXPECT_THROW((void)*failing.begin(), mp::remote_error);
}

INSTANTIATE_TEST_SUITE_P(methods, futures_conformance,
                         ::testing::ValuesIn(multiproc_test::pool_methods()),
                         multiproc_test::method_name);

}  // namespace
