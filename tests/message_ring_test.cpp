// The message ring's repairs after a process died half-way through an append, a restart or a
// take. A kill cannot be aimed at one instruction from a test, so each state such a death
// leaves is set up by hand in a ring of this process, as the dead process would have left it;
// the next holder of the lock (or of the reader claim) must put it right. The kills themselves
// were aimed with gdb at each of these instructions when the repairs were written (issue 10).
#include <cstring>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "../src/core/shared/message_ring.hpp"
#include "../src/core/shared/shared_object.hpp"
#include "../src/os/sync.hpp"

namespace mp = multiproc;
namespace core = multiproc::detail;

namespace {

void nothing() {}

/// The pid of a process that ran and was joined: it names no running process now. Spawned,
/// so that it is this process's child, reaped by join() (a fork server's child may still be
/// its zombie for a moment, and a zombie's pid answers kill()).
std::int64_t ended_pid() {
  mp::process p(mp::start_method::spawn, nothing);
  p.start();
  p.join();
  return *p.pid();
}

/// A reader claim token as the ring makes them: the holder's pid, then a count.
std::uint64_t token_of(std::int64_t pid) {
  return (static_cast<std::uint64_t>(pid) << 24) | 1u;
}

constexpr std::size_t header_at = 0;
constexpr std::size_t data_at = 16384;
constexpr std::size_t capacity = std::size_t{1} << 20;

class message_ring_repairs : public ::testing::Test {
 protected:
  message_ring_repairs()
      : object_(core::shared_object::create(core::shared_object::kind::queue, data_at + capacity,
                                            true)),
        ring_(object_, header_at, data_at) {
    ring_.initialise(capacity, 0);
  }

  core::ring_header& header() { return ring_.header(); }

  void put(int value) {
    core::shared_lock lock(object_);
    ASSERT_TRUE(ring_.has_room(sizeof value));
    ring_.push(1, reinterpret_cast<const char*>(&value), sizeof value);
  }

  std::optional<int> take() {
    std::string out;
    std::size_t length = 0;
    std::uint64_t fingerprint = 0;
    core::message_ring::stretches place{};
    bool follow_up = false;
    if (ring_.try_take(out, length, fingerprint, place, follow_up) !=
        core::message_ring::take_outcome::taken) {
      return std::nullopt;
    }
    int value = 0;
    std::memcpy(&value, out.data(), sizeof value);
    return value;
  }

  /// Whether the reader claim is held, looked at as a waiter that slept a whole slice does.
  bool claim_held_after_liveness_check() {
    core::shared_lock lock(object_);
    return ring_.reading(true);
  }

  /// The reader claim as a consumer that died holding it leaves it. `named`: it had named
  /// itself (and recorded `head` and `popped`) before it died.
  void claim_held_by_dead_consumer(bool named) {
    const std::int64_t pid = ended_pid();
    header().reader.store(token_of(pid));
    if (!named) return;
    header().claim_head.store(header().head.load());
    header().claim_popped.store(header().popped.load());
    header().reader_started.store(0);
    header().reader_pid.store(pid);
  }

  core::shared_object object_;
  core::message_ring ring_;
};

TEST_F(message_ring_repairs, an_append_killed_between_its_two_counts_is_undone) {
  put(1);
  {
    // Killed after counting a second message pushed, before publishing it.
    core::shared_lock lock(object_);
    header().intent_tail = header().tail.load() + core::message_ring::footprint(sizeof(int));
    header().intent_pushed = header().pushed.load();
    header().intent.store(core::intent_appending);
    header().pushed.store(header().pushed.load() + 1);
  }
  EXPECT_EQ(ring_.items(), 2u);  // the state the death left
  {
    core::shared_lock lock(object_);
    ring_.repair_locked();
  }
  EXPECT_EQ(ring_.items(), 1u);
  EXPECT_EQ(take(), 1);
  EXPECT_EQ(ring_.items(), 0u);
  EXPECT_TRUE(ring_.empty());
  put(2);  // and the ring goes on
  EXPECT_EQ(take(), 2);
}

TEST_F(message_ring_repairs, a_restart_killed_between_head_and_tail_is_finished) {
  put(1);
  ASSERT_EQ(take(), 1);
  const std::uint64_t start = capacity;  // the data area's start, one lap on
  {
    // Killed after moving `head` to the start, before `tail`: head is past tail.
    core::shared_lock lock(object_);
    header().intent_tail = start;
    header().intent.store(core::intent_restarting);
    header().head.store(start);
  }
  EXPECT_FALSE(ring_.empty());  // the state the death left: a garbage message seems there
  {
    core::shared_lock lock(object_);
    ring_.repair_locked();
  }
  EXPECT_TRUE(ring_.empty());
  EXPECT_EQ(header().tail.load(), start);
  put(7);
  EXPECT_EQ(take(), 7);
}

TEST_F(message_ring_repairs, a_consumer_killed_between_counting_and_moving_head_loses_nothing) {
  put(5);
  claim_held_by_dead_consumer(true);
  header().popped.store(header().popped.load() + 1);  // counted taken; head not moved
  EXPECT_EQ(ring_.items(), 0u);                       // the state the death left
  EXPECT_FALSE(take().has_value());                   // the dead holder's claim blocks takes
  EXPECT_FALSE(claim_held_after_liveness_check());
  EXPECT_EQ(ring_.items(), 1u);
  EXPECT_EQ(take(), 5);
  EXPECT_EQ(ring_.items(), 0u);
}

TEST_F(message_ring_repairs, a_consumer_killed_after_taking_keeps_the_count_of_its_take) {
  put(5);
  put(6);
  claim_held_by_dead_consumer(true);
  // It took the oldest (counted, head moved) and died before dropping the claim.
  header().popped.store(header().popped.load() + 1);
  header().head.store(header().head.load() + core::message_ring::footprint(sizeof(int)));
  EXPECT_FALSE(claim_held_after_liveness_check());
  EXPECT_EQ(ring_.items(), 1u);
  EXPECT_EQ(take(), 6);
}

TEST_F(message_ring_repairs, a_consumer_killed_before_naming_itself_is_found_by_its_token) {
  put(5);
  claim_held_by_dead_consumer(false);
  EXPECT_FALSE(take().has_value());
  EXPECT_FALSE(claim_held_after_liveness_check());
  EXPECT_EQ(take(), 5);
}

TEST_F(message_ring_repairs, a_consumer_killed_while_dropping_a_dead_claim_is_finished) {
  put(5);
  claim_held_by_dead_consumer(true);
  header().popped.store(header().popped.load() + 1);
  header().reader.store(~std::uint64_t{0});  // the dropper's token: it died before clearing
  EXPECT_FALSE(claim_held_after_liveness_check());
  EXPECT_EQ(ring_.items(), 1u);
  EXPECT_EQ(take(), 5);
}

TEST_F(message_ring_repairs, a_running_holder_keeps_its_claim) {
  put(5);
  const core::os::process_stamp self = core::os::this_process_stamp();
  header().reader.store(token_of(self.pid));
  header().claim_head.store(header().head.load());
  header().claim_popped.store(header().popped.load());
  header().reader_started.store(self.started);
  header().reader_pid.store(self.pid);
  EXPECT_TRUE(claim_held_after_liveness_check());
  EXPECT_FALSE(take().has_value());
  header().reader_pid.store(0);
  header().reader.store(0);
  EXPECT_EQ(take(), 5);
}

}  // namespace
