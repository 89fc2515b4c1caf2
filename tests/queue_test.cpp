// Conformance of mp::queue, mp::simple_queue and mp::joinable_queue on every start method:
// between processes, through a pool (as initializer and as task arguments), timeouts,
// back-pressure, end of stream, type mismatches, killed producers, and no leak.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

void put_range(mp::queue<int> q, int first, int count) {
  for (int i = first; i < first + count; ++i)
    q.put(i);
}

void put_range_and_close(mp::queue<int> q, int first, int count) {
  put_range(q, first, count);
  q.close();
}

/// Takes `count` items and puts their sum on `results`.
void sum_items(mp::queue<int> q, int count, mp::queue<long> results) {
  long sum = 0;
  for (int i = 0; i < count; ++i)
    sum += q.get();
  results.put(sum);
}

/// A pool task: drains until end of stream; returns every item it took.
std::vector<int> drain(mp::queue<int> q) {
  std::vector<int> taken;
  for (;;) {
    try {
      taken.push_back(q.get());
    } catch (const mp::closed_error&) {
      return taken;
    }
  }
}

/// A pool task: puts `count` items from `first`, then closes (its process stops producing).
int produce(mp::queue<int> q, int first, int count) {
  put_range_and_close(q, first, count);
  return count;
}

/// Puts large items (each `size` bytes of `fill`, the fill changing per item) until killed.
void put_large_items_forever(mp::queue<std::string> q, std::size_t size) {
  for (char fill = 'a';; fill = fill == 'z' ? 'a' : static_cast<char>(fill + 1))
    q.put(std::string(size, fill));
}

/// The queue an initializer hands to the worker, for its tasks.
mp::queue<int>* worker_queue = nullptr;
void keep_queue(mp::queue<int> q) {
  worker_queue = new mp::queue<int>(std::move(q));
}
int put_on_worker_queue(int value) {
  worker_queue->put(value);
  return value;
}

void process_items(mp::joinable_queue<int> q, int count, mp::queue<int> done) {
  for (int i = 0; i < count; ++i) {
    done.put(q.get());
    q.task_done();
  }
}

/// An item whose encoding or decoding stops half-way in a process that asks it to: its bytes
/// are past the in-place threshold, so a process stalled in it holds the ring's writer or
/// reader claim -- and is then killed there.
bool stall_in_save = false;
bool stall_in_load = false;
mp::queue<int>* stalled_signal = nullptr;
[[noreturn]] void signal_stalled_and_wait_forever() {
  stalled_signal->put(1);
  for (;;)
    std::this_thread::sleep_for(std::chrono::hours(1));  // killed here by the test
}
struct stalling_item {
  std::vector<char> head;
  std::vector<char> tail;
  template <class Archive>
  void save(Archive& archive) const {
    archive(head);
    if (stall_in_save) signal_stalled_and_wait_forever();
    archive(tail);
  }
  template <class Archive>
  void load(Archive& archive) {
    archive(head);
    if (stall_in_load) signal_stalled_and_wait_forever();
    archive(tail);
  }
};
stalling_item make_stalling_item(char fill) {
  return {std::vector<char>(std::size_t{3} << 20, fill), std::vector<char>(4096, fill)};
}

void put_and_stall_half_way(mp::queue<stalling_item> q, mp::queue<int> stalled) {
  stalled_signal = &stalled;
  stall_in_save = true;
  q.put(make_stalling_item('w'));
}
void get_and_stall_half_way(mp::queue<stalling_item> q, mp::queue<int> stalled) {
  stalled_signal = &stalled;
  stall_in_load = true;
  (void)q.get();
}

/// Item `id` of a numbered stream: its id, then filler -- every 100th past the in-place
/// threshold, so that it is read straight out of the ring under the reader claim.
std::string numbered_item(int id) {
  const std::size_t size = id % 100 == 0 ? std::size_t{3} << 19 : 24;
  std::string item = std::to_string(id) + ':';
  item.resize(size, static_cast<char>('a' + id % 26));
  return item;
}
/// The id of a numbered item; -1 if it is not exactly what was put (torn, or mixed up).
int id_of(const std::string& item) {
  const int id = std::stoi(item.substr(0, item.find(':')));
  return item == numbered_item(id) ? id : -1;
}
void put_numbered_and_close(mp::queue<std::string> q, int count) {
  for (int i = 0; i < count; ++i)
    q.put(numbered_item(i));
  q.close();
}
/// Takes until end of stream, putting each item's id on `ids`, then -2.
void drain_numbered(mp::queue<std::string> q, mp::queue<int> ids) {
  try {
    for (;;)
      ids.put(id_of(q.get()));
  } catch (const mp::closed_error&) {
    ids.put(-2);
  }
}

class queue_conformance : public multiproc_test::method_test {
 protected:
  template <class F, class... Args>
  mp::process start(F&& target, Args&&... args) {
    mp::process p(method(), std::forward<F>(target), std::forward<Args>(args)...);
    p.start();
    return p;
  }
};

TEST_P(queue_conformance, one_producer_process_items_arrive_in_order) {
  mp::queue<int> q;
  auto producer = start(put_range, q, 0, 5000);
  for (int i = 0; i < 5000; ++i)
    ASSERT_EQ(q.get(), i);
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
}

TEST_P(queue_conformance,
       a_producer_that_exits_loses_nothing_and_joining_it_first_never_deadlocks) {
  // Python's Queue deadlocks here (the producer cannot exit until its items are read); every
  // item put() returned for is already in shared memory.
  mp::queue<int> q;
  auto producer = start(put_range_and_close, q, 0, 100000);
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
  long long sum = 0;
  int count = 0;
  for (;;) {
    try {
      sum += q.get();
      ++count;
    } catch (const mp::closed_error&) {
      break;
    }
  }
  EXPECT_EQ(count, 100000);
  EXPECT_EQ(sum, 100000LL * 99999 / 2);
}

TEST_P(queue_conformance, many_producers_and_consumers_lose_and_duplicate_nothing) {
  mp::queue<int> q;
  mp::queue<long> sums;
  std::vector<mp::process> processes;
  for (int p = 0; p < 3; ++p)
    processes.push_back(start(put_range, q, p * 2000, 2000));
  for (int c = 0; c < 2; ++c)
    processes.push_back(start(sum_items, q, 3000, sums));
  long total = sums.get() + sums.get();
  for (auto& p : processes) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(total, 6000L * 5999 / 2);
  EXPECT_TRUE(q.empty());
}

TEST_P(queue_conformance, consumer_threads_and_a_process_take_small_and_large_items_once_each) {
  // Consumers take small items without the queue's lock and large ones in place under the
  // reader claim: two threads of this process and a consumer process share one stream of both.
  constexpr int count = 3000;
  mp::queue<std::string> q;
  mp::queue<int> ids;
  auto consumer = start(drain_numbered, q, ids);
  auto producer = start(put_numbered_and_close, q, count);
  std::vector<int> taken_here[2];
  std::vector<std::thread> threads;
  for (auto& taken : taken_here) {
    threads.emplace_back([&q, &taken] {
      try {
        for (;;)
          taken.push_back(id_of(q.get()));
      } catch (const mp::closed_error&) {
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  std::multiset<int> seen;
  for (auto id = ids.get(60s); id && *id != -2; id = ids.get(60s))
    seen.insert(*id);
  producer.join();
  consumer.join();
  EXPECT_EQ(producer.exitcode(), 0);
  EXPECT_EQ(consumer.exitcode(), 0);
  for (const auto& taken : taken_here)
    seen.insert(taken.begin(), taken.end());
  ASSERT_EQ(seen.size(), static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i)
    EXPECT_EQ(seen.count(i), 1u) << i;
}

TEST_P(queue_conformance, many_to_many_through_a_pool_each_item_exactly_once) {
  mp::queue<int> q;
  mp::pool pool(options(4));
  std::vector<mp::async_result<int>> produced;
  for (int p = 0; p < 4; ++p)
    produced.push_back(pool.apply_async(produce, q, p * 1000, 1000));
  for (auto& r : produced)
    EXPECT_EQ(r.get(), 1000);
  // Every producer closed; two drainers take everything, then see end of stream once this
  // process, which made the queue, closes it too.
  auto first = pool.apply_async(drain, q);
  auto second = pool.apply_async(drain, q);
  q.close();
  std::multiset<int> seen;
  for (int v : first.get())
    seen.insert(v);
  for (int v : second.get())
    seen.insert(v);
  ASSERT_EQ(seen.size(), 4000u);
  for (int i = 0; i < 4000; ++i)
    EXPECT_EQ(seen.count(i), 1u) << i;
}

TEST_P(queue_conformance, a_queue_given_to_the_initializer_serves_every_task) {
  mp::queue<int> q;
  mp::pool pool(mp::pool_options{2, mp::call(keep_queue, q), 0, method()});
  EXPECT_EQ(pool.map(put_on_worker_queue, std::vector<int>{1, 2, 3, 4, 5}, 1),
            (std::vector<int>{1, 2, 3, 4, 5}));
  int sum = 0;
  for (int i = 0; i < 5; ++i)
    sum += q.get();
  EXPECT_EQ(sum, 15);
}

TEST_P(queue_conformance, timeouts_and_nowait) {
  mp::queue<int> q(2);
  EXPECT_EQ(q.get(50ms), std::nullopt);
  EXPECT_EQ(q.get_nowait(), std::nullopt);
  EXPECT_TRUE(q.put_nowait(1));
  EXPECT_TRUE(q.put(2, 50ms));
  EXPECT_TRUE(q.full());
  EXPECT_FALSE(q.put_nowait(3));
  EXPECT_FALSE(q.put(3, 50ms));
  EXPECT_EQ(q.qsize(), 2u);
  EXPECT_EQ(q.get(), 1);
  EXPECT_TRUE(q.put_nowait(3));
  EXPECT_EQ(q.get(std::chrono::hours::max()), 2);
  EXPECT_EQ(q.get_nowait(), 3);
  EXPECT_TRUE(q.empty());
}

TEST_P(queue_conformance, maxsize_holds_a_producer_back_until_the_consumer_takes) {
  mp::queue<int> q(1);
  mp::queue<int> progress;
  auto producer = start(put_range, q, 0, 50);
  // The producer can never be more than one item ahead: the queue never holds two.
  for (int i = 0; i < 50; ++i) {
    EXPECT_LE(q.qsize(), 1u);
    EXPECT_EQ(q.get(), i);
  }
  producer.join();
}

TEST_P(queue_conformance, end_of_stream_and_use_after_close) {
  mp::queue<int> q;
  auto producer = start(put_range_and_close, q, 0, 3);
  producer.join();
  EXPECT_EQ(q.get(), 0);
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(q.get(), 2);
  EXPECT_THROW(q.get(), mp::closed_error);
  EXPECT_THROW(q.get(10ms), mp::closed_error);
  q.close();
  EXPECT_THROW(q.put(1), mp::closed_error);
  EXPECT_THROW(q.get_nowait(), mp::closed_error);
}

TEST_P(queue_conformance, an_item_of_another_type_is_a_serialization_error_not_garbage) {
  // A typed queue cannot be handed a wrong item through the API; the check under it still
  // stands: an item put as another type is refused, taken out, and the next one reads fine.
  mp::queue<int> q;
  q.put(1);  // makes the queue's memory
  auto core = mp::detail::make_queue(0);
  const std::string text = "not an int";
  ASSERT_TRUE(
      mp::detail::queue_put(*core, mp::detail::codec_of<std::string>(), &text, std::nullopt));
  const int seven = 7;
  ASSERT_TRUE(mp::detail::queue_put(*core, mp::detail::codec_of<int>(), &seven, std::nullopt));
  int value = 0;
  EXPECT_THROW(mp::detail::queue_get(*core, mp::detail::codec_of<int>(), &value, std::nullopt),
               mp::serialization_error);
  ASSERT_TRUE(mp::detail::queue_get(*core, mp::detail::codec_of<int>(), &value, std::nullopt));
  EXPECT_EQ(value, 7);
  EXPECT_EQ(q.get(), 1);
  // The same for a large item, read in place.
  const std::string large(std::size_t{2} << 20, 'x');
  ASSERT_TRUE(
      mp::detail::queue_put(*core, mp::detail::codec_of<std::string>(), &large, std::nullopt));
  ASSERT_TRUE(mp::detail::queue_put(*core, mp::detail::codec_of<int>(), &seven, std::nullopt));
  EXPECT_THROW(mp::detail::queue_get(*core, mp::detail::codec_of<int>(), &value, std::nullopt),
               mp::serialization_error);
  ASSERT_TRUE(mp::detail::queue_get(*core, mp::detail::codec_of<int>(), &value, std::nullopt));
  EXPECT_EQ(value, 7);
}

TEST_P(queue_conformance, a_producer_killed_mid_put_leaves_whole_items_only) {
  // Items of 4 MiB, each filled with one letter: the consumer must only ever see whole ones;
  // once the producer is killed, end of stream.
  mp::queue<std::string> q;
  constexpr std::size_t size = std::size_t{4} << 20;
  auto producer = start(put_large_items_forever, q, size);
  for (int i = 0; i < 3; ++i) {
    const std::string item = q.get();
    ASSERT_EQ(item.size(), size);
    EXPECT_EQ(item.find_first_not_of(item[0]), std::string::npos);
  }
  producer.kill();
  producer.join();
  for (;;) {
    try {
      const auto item = q.get(30s);  // a hang guard: end of stream comes within ~100 ms
      ASSERT_TRUE(item.has_value()) << "no end of stream after the producer was killed";
      ASSERT_EQ(item->size(), size);
      EXPECT_EQ(item->find_first_not_of((*item)[0]), std::string::npos);
    } catch (const mp::closed_error&) {
      break;  // the producer is known to be gone
    }
  }
}

TEST_P(queue_conformance, a_producer_killed_while_writing_in_place_blocks_no_other_producer) {
  // Killed half-way through encoding a large item straight into the ring (holding its writer
  // claim): the item was never there, and the next producers go on after it.
  mp::queue<stalling_item> q;
  mp::queue<int> stalled;
  auto producer = start(put_and_stall_half_way, q, stalled);
  ASSERT_EQ(stalled.get(30s), 1);  // a hang guard
  producer.kill();
  producer.join();
  q.put(make_stalling_item('a'));  // waits out the dead claim (one liveness slice)
  q.put(stalling_item{{'b'}, {'b'}});
  const auto first = q.get(30s);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->head, std::vector<char>(std::size_t{3} << 20, 'a'));
  EXPECT_EQ(first->tail, std::vector<char>(4096, 'a'));
  const auto second = q.get(30s);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->head, std::vector<char>{'b'});
  EXPECT_TRUE(q.empty());
}

TEST_P(queue_conformance, a_consumer_killed_while_reading_in_place_loses_no_item) {
  // Killed half-way through decoding a large item straight out of the ring (holding its reader
  // claim): the item was not taken, and the next consumer gets it whole.
  mp::queue<stalling_item> q;
  mp::queue<int> stalled;
  q.put(make_stalling_item('r'));
  q.put(stalling_item{{'s'}, {'s'}});
  auto consumer = start(get_and_stall_half_way, q, stalled);
  ASSERT_EQ(stalled.get(30s), 1);
  consumer.kill();
  consumer.join();
  const auto first = q.get(30s);  // waits out the dead claim (one liveness slice)
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->head, std::vector<char>(std::size_t{3} << 20, 'r'));
  EXPECT_EQ(first->tail, std::vector<char>(4096, 'r'));
  const auto second = q.get(30s);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->head, std::vector<char>{'s'});
}

TEST_P(queue_conformance, large_items_wrapping_around_the_ring_end_cross_whole) {
  // A queue that never empties (one small item always waits in it) moves on through its
  // 1 GiB ring: 48 MiB items, which do not divide it, end up split across the ring's end --
  // written and read in place in two stretches.
  mp::queue<std::vector<char>> q;
  constexpr std::size_t size = std::size_t{48} << 20;
  auto item_number = [](const std::vector<char>& item) { return static_cast<int>(item[0]); };
  auto make = [&](int n) {
    std::vector<char> item(size, static_cast<char>(n));
    item.back() = static_cast<char>(~n);
    return item;
  };
  q.put(std::vector<char>{0});
  for (int n = 1; n <= 24; ++n) {  // 24 x 48 MiB: past 1 GiB
    q.put(make(n));
    const auto small = q.get();
    ASSERT_EQ(small.size(), 1u);
    const auto large = q.get();
    ASSERT_EQ(large.size(), size);
    ASSERT_EQ(item_number(large), n);
    ASSERT_TRUE(large == make(n));  // not EXPECT_EQ: 48 MiB would be printed on failure
    q.put(std::vector<char>{0});
  }
  EXPECT_EQ(q.get().size(), 1u);
}

TEST_P(queue_conformance, large_items_cross_whole) {
  mp::queue<std::vector<char>> q;
  std::vector<char> big(std::size_t{64} << 20);
  for (std::size_t i = 0; i < big.size(); i += 4096)
    big[i] = static_cast<char>(i / 4096);
  q.put(big);
  EXPECT_EQ(q.get(), big);
}

TEST_P(queue_conformance, joinable_queue_join_waits_for_every_task_done) {
  mp::joinable_queue<int> q;
  mp::queue<int> done;
  for (int i = 0; i < 20; ++i)
    q.put(i);
  auto worker = start(process_items, q, 20, done);
  q.join();
  // Every item was reported done, so every one of them was processed first.
  EXPECT_EQ(done.qsize(), 20u);
  EXPECT_TRUE(q.join(0ms));
  worker.join();
  EXPECT_THROW(q.task_done(), mp::state_error);
}

TEST_P(queue_conformance, simple_queue_between_processes) {
  mp::simple_queue<std::string> q;
  mp::process p(
      method(), [](mp::simple_queue<std::string> q) { q.put("from the child"); }, q);
  p.start();
  EXPECT_EQ(q.get(), "from the child");
  p.join();
  EXPECT_TRUE(q.empty());
}

TEST_P(queue_conformance, a_queue_cannot_travel_inside_a_queue) {
  mp::queue<mp::queue<int>> outer;
  mp::queue<int> inner;
  EXPECT_THROW(outer.put(inner), mp::serialization_error);
}

TEST_P(queue_conformance, a_thousand_queues_created_and_dropped_leave_nothing) {
  const auto before = multiproc_test::count_resources();
  for (int i = 0; i < 1000; ++i) {
    mp::queue<int> q;
    q.put(i);
    EXPECT_EQ(q.get(), i);
  }
  EXPECT_TRUE(multiproc_test::same_resources(before));
}

INSTANTIATE_TEST_SUITE_P(methods, queue_conformance,
                         ::testing::ValuesIn(multiproc_test::pool_methods()),
                         multiproc_test::method_name);

}  // namespace
