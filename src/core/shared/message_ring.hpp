// A ring of messages in a shared object's memory: what mp::queue and mp::pipe's connections
// carry. Producers append with the object's lock held (shared_lock), one at a time. Consumers
// take without it: the oldest message belongs to whoever holds the ring's reader claim, a word
// taken by compare-and-swap and naming its process, so that one that died holding it is found
// and the claim dropped. So a producer and a consumer never wait for each other's lock; each
// side's state lives on its own cache lines, and the other side reads it only when it must
// (a producer looks at the consumers' position once per look_stride bytes, or when the ring
// seems full). A large message (direct_threshold and more) is encoded straight into the ring
// under the writer claim, and decoded straight out of it under the reader claim, both held
// while the bytes are copied. The positions move only once a message is complete, so a
// process killed in the middle of put or get leaves no torn message: it is there whole, or
// not at all.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "../../os/sync.hpp"
#include "../protocol/codec.hpp"
#include "shared_object.hpp"

namespace multiproc::detail {

/// Who holds a queue, per process, for end of stream: a fixed table in shared memory (one
/// entry per process). `count`: the process's own handles; `pending`: of those, ones the
/// sender counted for it when it delivered a call, which the process takes over when it opens
/// them; `reserved`: calls this process has encoded with the queue in them and not yet
/// dropped (they may still reach a process that will hold it). An entry of a process that
/// ended is cleared when noticed.
struct holder_table {
  static constexpr std::size_t slots = 256;
  struct entry {
    std::int64_t pid;
    std::uint64_t started;
    std::uint64_t count;
    std::uint64_t pending;
    std::uint64_t reserved;
  };
  entry entries[slots];
  /// Entries past this one have never been used: scans stop here (a queue has few holders).
  std::uint64_t used;

  /// `process` holds one more handle; `adopting`: one the sender counted for it already, if
  /// any (then nothing changes but who counted it). Throws state_error when 256 live processes
  /// already hold the queue.
  void add(const os::process_stamp& process, bool adopting);
  /// `process` holds one handle less.
  void remove(const os::process_stamp& process) noexcept;
  /// The sender counts `receiver` as holding one handle (the call it delivered carries it).
  void deliver(const os::process_stamp& receiver);
  /// Undoes a deliver() that `receiver` has not taken over yet (the call came back).
  void undeliver(const os::process_stamp& receiver) noexcept;
  /// `process` keeps one more (or, `delta` -1, one fewer) call with the queue in it.
  void reserve(const os::process_stamp& process, int delta);
  /// Whether anyone but `self`'s own handles still holds the queue (calls on their way
  /// included). With `check_liveness`, processes that ended are found and cleared first.
  bool others_hold(const os::process_stamp& self, bool check_liveness) noexcept;

 private:
  entry* find(const os::process_stamp& process) noexcept;
  entry& find_or_add(const os::process_stamp& process);
};

/// A process writing a large message after the tail, outside the lock (producers' side).
struct ring_claim {
  std::int64_t pid;
  std::uint64_t started;
  std::uint64_t active;
};

/// ring_header::intent: an append (`tail` and `pushed` being moved), or a restart at the
/// data area's start (`head` and `tail`).
inline constexpr std::uint64_t intent_appending = 1;
inline constexpr std::uint64_t intent_restarting = 2;

/// Messages of this size and more are written and read in place, under a claim.
inline constexpr std::size_t direct_threshold = std::size_t{1} << 20;

/// The state of one ring, in shared memory after the object's header. Each side's fields are
/// on cache lines of their own: the other side's reads of them are what a message costs.
struct ring_header {
  std::uint64_t capacity;  ///< bytes in the data area (a power of two)
  std::uint64_t maxsize;   ///< most messages it may hold (0: as many as fit)

  // The producers' side, written with the object's lock held.
  alignas(64) std::atomic<std::uint64_t> tail;  ///< position after the newest (grows for ever)
  std::atomic<std::uint64_t> pushed;            ///< messages ever appended
  /// The data area's pages past warm_bytes up to here may be in use.
  std::atomic<std::uint64_t> touched;
  std::uint64_t head_seen;   ///< `head` when a producer last read it (room is at least that)
  std::uint64_t next_look;   ///< a producer reads `head` again once `tail` gets here
  std::uint64_t released;    ///< while streaming: read memory before this position given back
  std::uint64_t unfinished;  ///< joinable queues: put and not yet task_done
  std::uint64_t shared;      ///< it has been handed to another process (end of stream can come)
  ring_claim writer;         ///< a large message is being written after `tail`
  /// What a lock holder is half-way through (0: nothing): a process killed between the
  /// stores of an append or a restart leaves it for the next holder to undo or finish.
  std::atomic<std::uint64_t> intent;
  std::uint64_t intent_tail;    ///< the `tail` it is making
  std::uint64_t intent_pushed;  ///< `pushed` before an append

  // The consumers' side, written by the holder of the reader claim.
  alignas(64) std::atomic<std::uint64_t> head;  ///< position of the oldest message
  std::atomic<std::uint64_t> popped;            ///< messages ever removed
  std::atomic<std::uint64_t> reader;            ///< the reader claim's token (0: free)
  std::atomic<std::int64_t> reader_pid;         ///< its holder (0 while being set)
  std::atomic<std::uint64_t> reader_started;
  /// `head` and `popped` when the claim was taken (named with reader_pid): a holder killed
  /// between counting a message taken and moving `head` is undone from them.
  std::atomic<std::uint64_t> claim_head;
  std::atomic<std::uint64_t> claim_popped;

  // Who sleeps (in the object's wait) for the other side: it must wake them.
  alignas(64) std::atomic<std::uint32_t> producers_waiting;  ///< for room
  std::atomic<std::uint32_t> consumers_waiting;              ///< for the reader claim
  holder_table holders;
};

class message_ring {
 public:
  /// The ring whose header is at `header_offset` of `object`'s payload and whose data area
  /// (`capacity` bytes) follows at `data_offset`.
  message_ring(shared_object& object, std::size_t header_offset, std::size_t data_offset);
  /// Sets a fresh ring up (at creation, lock not needed yet). Throws std::logic_error for a
  /// capacity that is not a power of two.
  void initialise(std::size_t capacity, std::size_t maxsize);

  ring_header& header() const noexcept { return *header_; }
  /// Bytes a message of `size` bytes takes in the ring.
  static std::size_t footprint(std::size_t size) noexcept;
  /// Whether a message of `size` bytes could ever fit (the data area's size).
  bool could_hold(std::size_t size) const noexcept;
  /// Messages in the ring now (approximate while others work on it).
  std::uint64_t items() const noexcept;
  bool empty() const noexcept;

  // ---- producers: the object's lock held ----
  /// Whether a message of `size` bytes fits now (room, and fewer than maxsize messages).
  bool has_room(std::size_t size);
  /// Appends a message (has_room() must hold, and not writing()).
  void push(std::uint64_t fingerprint, const char* data, std::size_t size);
  /// Whether a writer claim is held. With `check_liveness`, one held by a process that ended
  /// is dropped first (its half-written message was never there).
  bool writing(bool check_liveness) noexcept;
  /// Claims the space after the newest message for writing by this process (not writing()).
  void start_writing();
  /// Where the claimed message's bytes from `offset` on may go now: up to `length` bytes
  /// (never more than a few MiB, made usable); length 0 when the ring is full until readers
  /// take messages.
  char* write_window(std::size_t offset, std::size_t& length);
  /// The claimed message is whole (`size` bytes): appends it, drops the claim.
  void finish_writing(std::uint64_t fingerprint, std::size_t size);
  /// Drops the writer claim, appending nothing.
  void abandon_writing() noexcept;

  // ---- consumers: no lock needed ----
  /// Where a message's bytes lie: one stretch, or two when it wraps around the end.
  struct stretches {
    const char* first;
    std::size_t first_size;
    const char* second;
    std::size_t second_size;
    std::uint64_t fingerprint;
  };
  enum class take_outcome {
    taken,     ///< the oldest message is in `out`, removed from the ring
    in_place,  ///< a large one: read it where `place` says, then finish_reading()
    empty,     ///< nothing to take
    busy,      ///< another process or thread holds the reader claim
  };
  /// Takes the oldest message if the reader claim is free: a small one into `out` (its first
  /// `length` bytes; the string grown as needed, never shrunk); a large one stays in place
  /// under the claim. `follow_up`: true when the caller must then, with the object's lock
  /// held, call after_take_locked() and wake the object's sleepers.
  take_outcome try_take(std::string& out, std::size_t& length, std::uint64_t& fingerprint,
                        stretches& place, bool& follow_up);
  /// The message taken in place is read (or could not be): removes it, drops the claim.
  /// Returns `follow_up` as try_take does.
  bool finish_reading();
  /// With the lock held, after a take whose `follow_up` was true: an empty ring that went past
  /// its warm start goes back to it and gives the memory back. The caller wakes the sleepers.
  void after_take_locked() noexcept;
  /// With the lock held: whether the reader claim is held. With `check_liveness`, one held by
  /// a process that ended is dropped first (the message it was reading is there still, for
  /// the next reader, and the count of messages taken is put right).
  bool reading(bool check_liveness) noexcept;
  /// With the lock held: undoes or finishes what a lock holder killed half-way through an
  /// append or a restart left (see ring_header::intent). Cheap when there is nothing.
  void repair_locked() noexcept;

 private:
  bool fits(std::size_t size) const noexcept;
  take_outcome take_claimed(std::uint64_t head, std::string& out, std::size_t& length,
                            std::uint64_t& fingerprint, stretches& place, bool& follow_up);
  bool try_claim_reader(bool to_take) noexcept;
  void release_reader() noexcept;
  void drop_dead_reader() noexcept;
  bool follow_up_needed() const noexcept;
  void remove_oldest(std::uint64_t head, std::size_t size) noexcept;
  void look_behind(std::uint64_t need);
  void restart_if_empty() noexcept;
  void append(std::uint64_t fingerprint, std::size_t size);
  void copy_in(std::uint64_t position, const char* from, std::size_t size);
  void copy_out(std::uint64_t position, char* to, std::size_t size);
  void note_written(std::uint64_t position, std::size_t size) noexcept;
  void give_back_read_memory() noexcept;
  void give_back_passed_memory(std::uint64_t head) noexcept;

  shared_object& object_;
  ring_header* header_;
  std::size_t data_offset_;
};

/// Counts a process as asleep waiting on the other side for as long as it lives: a producer
/// waiting for room (ring_header::producers_waiting) or a consumer waiting for the reader
/// claim or for messages (consumers_waiting). Whoever then makes room or drops the claim
/// wakes the object's sleepers. Made before the waiter's last look at its condition (and kept
/// while it sleeps), so no wake-up is lost.
class sleeper {
 public:
  sleeper() = default;
  ~sleeper() { stop(); }
  sleeper(const sleeper&) = delete;
  sleeper& operator=(const sleeper&) = delete;
  /// Counts this waiter in `count` (once).
  void start(std::atomic<std::uint32_t>& count) noexcept {
    if (count_ != nullptr) return;
    count_ = &count;
    count_->fetch_add(1);
  }
  /// No longer counted.
  void stop() noexcept {
    if (count_ == nullptr) return;
    count_->fetch_sub(1);
    count_ = nullptr;
  }
  bool started() const noexcept { return count_ != nullptr; }

 private:
  std::atomic<std::uint32_t>* count_ = nullptr;
};

/// Writes one large message straight into a ring: the spill target of encode_value. When the
/// encoding passes direct_threshold it takes the ring's writer claim and goes on in the ring,
/// asking for room as it fills; commit() appends the message. Dropped without commit() (the
/// encoding threw, the wait timed out), it appends nothing and drops the claim.
class ring_writer : public spill_target {
 public:
  ring_writer(shared_object& object, message_ring& ring) : object_(object), ring_(ring) {}
  ~ring_writer() override;
  ring_writer(const ring_writer&) = delete;
  ring_writer& operator=(const ring_writer&) = delete;

  /// Whether the encoding went into the ring (then commit() it).
  bool claimed() const noexcept { return claimed_; }
  /// Appends the message written (`fingerprint`: its type) and wakes the readers.
  void commit(std::uint64_t fingerprint);

  void begin(std::string_view buffered, std::size_t incoming) override;
  void write(const char* data, std::size_t size) override;

 protected:
  /// With the lock held, returns once the claim may be taken: no other writer holds it
  /// (message_ring::writing) and the ring takes one more message by count. Waits, or throws.
  virtual void wait_to_claim(shared_lock& lock) = 0;
  /// With the lock held and the ring full: waits for readers to make room, or throws.
  virtual void wait_for_room(shared_lock& lock) = 0;
  /// The message is larger than the ring can ever hold: throws.
  [[noreturn]] virtual void too_large(std::size_t at_least) = 0;
  /// With the lock held, just after the message was appended.
  virtual void committed_locked() {}

 private:
  void next_window();

  shared_object& object_;
  message_ring& ring_;
  bool claimed_ = false;
  char* window_ = nullptr;
  std::size_t left_ = 0;     ///< bytes left in the window
  std::size_t written_ = 0;  ///< bytes of the message written so far
};

/// The reader claim on a ring's oldest message, for one large message read in place: taken by
/// message_ring::try_take (take_outcome::in_place), dropped (the message removed) when this
/// ends, however.
class ring_read_claim {
 public:
  ring_read_claim(shared_object& object, message_ring& ring) : object_(object), ring_(ring) {}
  ~ring_read_claim();
  ring_read_claim(const ring_read_claim&) = delete;
  ring_read_claim& operator=(const ring_read_claim&) = delete;
  /// try_take left the claim held: this object drops it.
  void adopt() noexcept { taken_ = true; }

 private:
  shared_object& object_;
  message_ring& ring_;
  bool taken_ = false;
};

}  // namespace multiproc::detail
