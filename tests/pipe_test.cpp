// Conformance of mp::pipe and mp::connection on every start method: duplex and one-way pipes
// between processes, through a pool, poll and timeouts, end of stream (Python's EOFError),
// type mismatches, raw bytes, large messages, and no leak.
#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

/// Answers each string with itself and "!", until end of stream.
void echo(mp::connection c) {
  for (;;) {
    try {
      c.send(c.recv<std::string>() + "!");
    } catch (const mp::closed_error&) {
      return;
    }
  }
}

void send_numbers(mp::connection c, int count) {
  for (int i = 0; i < count; ++i)
    c.send(i);
}

/// A pool task: receives one vector and sends back its sum.
long sum_received(mp::connection c) {
  const auto values = c.recv<std::vector<long>>();
  long sum = 0;
  for (long v : values)
    sum += v;
  c.send(sum);
  return sum;
}

mp::connection* worker_end = nullptr;
void keep_end(mp::connection c) {
  worker_end = new mp::connection(std::move(c));
}
int send_from_worker(int value) {
  worker_end->send(value);
  return value;
}

void send_bytes_then_value(mp::connection c) {
  const std::byte raw[] = {std::byte{1}, std::byte{2}, std::byte{3}};
  c.send_bytes(raw);
  c.send(std::string("typed"));
}

class pipe_conformance : public multiproc_test::method_test {
 protected:
  template <class F, class... Args>
  mp::process start(F&& target, Args&&... args) {
    mp::process p(method(), std::forward<F>(target), std::forward<Args>(args)...);
    p.start();
    return p;
  }
};

TEST_P(pipe_conformance, duplex_round_trips_and_end_of_stream_when_the_other_end_goes) {
  auto [mine, theirs] = mp::pipe();
  auto child = start(echo, theirs);
  theirs.close();  // the child holds its own copy
  for (int i = 0; i < 100; ++i) {
    mine.send(std::to_string(i));
    EXPECT_EQ(mine.recv<std::string>(), std::to_string(i) + "!");
  }
  mine.close();  // the child's recv sees end of stream, and it returns
  child.join();
  EXPECT_EQ(child.exitcode(), 0);
}

TEST_P(pipe_conformance, one_way_pipe_in_order_then_eof) {
  auto [reader, writer] = mp::pipe(false);
  auto child = start(send_numbers, writer, 1000);
  writer.close();
  for (int i = 0; i < 1000; ++i)
    ASSERT_EQ(reader.recv<int>(), i);
  child.join();
  EXPECT_THROW(reader.recv<int>(), mp::closed_error);  // Python's EOFError
  EXPECT_TRUE(reader.poll());                          // recv would not wait: it throws
  EXPECT_THROW(reader.send(1), mp::state_error);       // a reader only receives
}

TEST_P(pipe_conformance, eof_when_the_holder_is_killed) {
  auto [mine, theirs] = mp::pipe();
  auto child = start(echo, theirs);
  theirs.close();
  mine.send(std::string("x"));
  EXPECT_EQ(mine.recv<std::string>(), "x!");
  child.kill();
  child.join();
  EXPECT_THROW(mine.recv<std::string>(), mp::closed_error);
}

TEST_P(pipe_conformance, poll_and_timeouts) {
  auto [a, b] = mp::pipe();
  EXPECT_FALSE(a.poll());
  EXPECT_FALSE(a.poll(30ms));
  b.send(5);
  EXPECT_TRUE(a.poll(std::chrono::hours::max()));
  EXPECT_TRUE(a.poll(mp::forever));
  EXPECT_EQ(a.recv<int>(), 5);
  EXPECT_FALSE(a.poll(0ms));
}

TEST_P(pipe_conformance, another_type_is_a_serialization_error_and_bytes_are_bytes) {
  auto [a, b] = mp::pipe();
  b.send(42);
  EXPECT_THROW(a.recv<std::string>(), mp::serialization_error);
  auto child = start(send_bytes_then_value, b);
  b.close();
  EXPECT_EQ(a.recv_bytes(), (std::vector<std::byte>{std::byte{1}, std::byte{2}, std::byte{3}}));
  EXPECT_THROW(a.recv_bytes(), mp::serialization_error);  // it was sent with send()
  child.join();
}

TEST_P(pipe_conformance, a_connection_as_a_pool_task_argument) {
  mp::pool pool(options(2));
  auto [mine, theirs] = mp::pipe();
  auto result = pool.apply_async(sum_received, theirs);
  mine.send(std::vector<long>{1, 2, 3, 4});
  EXPECT_EQ(mine.recv<long>(), 10);
  EXPECT_EQ(result.get(), 10);
}

TEST_P(pipe_conformance, a_connection_given_to_the_initializer_serves_every_task) {
  auto [reader, writer] = mp::pipe(false);
  mp::pool pool(mp::pool_options{2, mp::call(keep_end, writer), 0, method()});
  EXPECT_EQ(pool.map(send_from_worker, std::vector<int>{1, 2, 3}, 1), (std::vector<int>{1, 2, 3}));
  int sum = 0;
  for (int i = 0; i < 3; ++i)
    sum += reader.recv<int>();
  EXPECT_EQ(sum, 6);
}

TEST_P(pipe_conformance, large_messages_cross_whole) {
  auto [a, b] = mp::pipe();
  std::vector<char> big(std::size_t{64} << 20, 'q');
  big.back() = 'z';
  b.send(big);
  EXPECT_EQ(a.recv<std::vector<char>>(), big);
}

TEST_P(pipe_conformance, use_after_close_and_empty_connections) {
  auto [a, b] = mp::pipe();
  a.close();
  a.close();  // idempotent
  EXPECT_THROW(a.send(1), mp::closed_error);
  EXPECT_THROW(a.recv<int>(), mp::closed_error);
  EXPECT_THROW(b.recv<int>(), mp::closed_error);  // nobody holds the other end
  mp::connection empty;
  EXPECT_THROW(empty.send(1), mp::state_error);
}

TEST_P(pipe_conformance, a_thousand_pipes_created_and_dropped_leave_nothing) {
  const auto before = multiproc_test::count_resources();
  for (int i = 0; i < 1000; ++i) {
    auto [a, b] = mp::pipe();
    a.send(i);
    EXPECT_EQ(b.recv<int>(), i);
  }
  EXPECT_TRUE(multiproc_test::same_resources(before));
}

INSTANTIATE_TEST_SUITE_P(methods, pipe_conformance,
                         ::testing::ValuesIn(multiproc_test::pool_methods()),
                         multiproc_test::method_name);

}  // namespace
