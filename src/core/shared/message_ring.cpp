// The message ring (see message_ring.hpp).
#include "message_ring.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>
#include <optional>
#include <stdexcept>

#include <multiproc/errors.hpp>

namespace multiproc::detail {

namespace {
/// Each message: its size and its type's fingerprint, then its bytes, padded to 8.
struct message_head {
  std::uint64_t size;
  std::uint64_t fingerprint;
};
constexpr std::size_t alignment = 8;
/// The start of the data area stays in memory once used: whenever the ring empties, the next
/// message goes back to its start, so a queue passing messages of up to this size one at a
/// time writes into warm pages. Past it, memory is given back once read.
constexpr std::uint64_t warm_bytes = std::uint64_t{64} << 20;
/// While the ring never empties (a stream), read memory past the warm start is given back in
/// stretches of this much, one system call each.
constexpr std::uint64_t release_stride = std::uint64_t{16} << 20;

// Capacities are powers of two (initialise() checks): a position's place in the data area is
// a mask, not a division, which would cost tens of cycles several times per message, all
// of them under the lock every producer and consumer takes.
std::uint64_t place_of(std::uint64_t position, std::uint64_t capacity) noexcept {
  return position & (capacity - 1);
}
/// The first position at or after `position` that is the data area's start.
std::uint64_t next_start(std::uint64_t position, std::uint64_t capacity) noexcept {
  return (position + capacity - 1) & ~(capacity - 1);
}
}  // namespace

// ---- holders ----------------------------------------------------------------------------------

holder_table::entry* holder_table::find(const os::process_stamp& process) noexcept {
  for (std::uint64_t i = 0; i < used; ++i) {
    entry& e = entries[i];
    if (e.pid == process.pid && e.started == process.started &&
        (e.count | e.pending | e.reserved) != 0) {
      return &e;
    }
  }
  return nullptr;
}

holder_table::entry& holder_table::find_or_add(const os::process_stamp& process) {
  if (entry* found = find(process)) return *found;
  for (int attempt = 0; attempt < 2; ++attempt) {
    for (std::uint64_t i = 0; i < slots; ++i) {
      entry& e = entries[i];
      if ((e.count | e.pending | e.reserved) == 0) {
        e = {process.pid, process.started, 0, 0, 0};
        if (i >= used) used = i + 1;
        return e;
      }
    }
    // Entries of processes that ended without a word are reclaimed before giving up.
    others_hold(os::process_stamp{}, true);
  }
  throw state_error("a queue may be held by at most 256 processes at once");
}

void holder_table::add(const os::process_stamp& process, bool adopting) {
  entry& e = find_or_add(process);
  if (adopting && e.pending != 0) {
    --e.pending;
  } else {
    ++e.count;
  }
}

void holder_table::remove(const os::process_stamp& process) noexcept {
  if (entry* e = find(process); e != nullptr && e->count > e->pending) --e->count;
}

void holder_table::deliver(const os::process_stamp& receiver) {
  entry& e = find_or_add(receiver);
  ++e.count;
  ++e.pending;
}

void holder_table::undeliver(const os::process_stamp& receiver) noexcept {
  if (entry* e = find(receiver); e != nullptr && e->pending != 0) {
    --e->pending;
    --e->count;
  }
}

void holder_table::reserve(const os::process_stamp& process, int delta) {
  if (delta > 0) {
    ++find_or_add(process).reserved;
  } else if (entry* e = find(process); e != nullptr && e->reserved != 0) {
    --e->reserved;
  }
}

bool holder_table::others_hold(const os::process_stamp& self, bool check_liveness) noexcept {
  bool found = false;
  for (std::uint64_t i = 0; i < used; ++i) {
    entry& e = entries[i];
    if ((e.count | e.pending | e.reserved) == 0) continue;
    if (check_liveness && !os::still_running({e.pid, e.started})) {
      e = {};  // it ended holding handles: it will put nothing more
      continue;
    }
    const bool mine = e.pid == self.pid && e.started == self.started;
    if (e.reserved != 0 || !mine) found = true;
  }
  return found;
}

// ---- the ring ---------------------------------------------------------------------------------

namespace {
static_assert(std::atomic<std::uint64_t>::is_always_lock_free &&
                  std::atomic<std::int64_t>::is_always_lock_free &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "the ring's shared words must be lock-free atomics (address-free, in any process)");

/// Producers read the consumers' position once per this many bytes appended (and when the
/// ring seems full): to go back to the warm start if the ring is empty, or to give back memory
/// read. Reading it at every message would move its cache line between the CPUs every time.
/// Small messages passing one at a time so stay in the data area's first pages.
constexpr std::uint64_t look_stride = std::uint64_t{64} << 10;

/// Names one holding of the reader claim: this process's id and a count, so two holdings
/// never share a token (a waiter that saw one token cannot mistake the next for it).
std::uint64_t claim_token() noexcept {
  static std::atomic<std::uint32_t> count{0};
  const auto pid = static_cast<std::uint64_t>(os::this_process_stamp().pid);
  return (pid << 24) | (count.fetch_add(1, std::memory_order_relaxed) & 0xffffffu);
}
/// Held by whoever drops a dead process's claim, for the moment it clears its holder (under the
/// object's lock: seen by the next holder of the lock, it is a dropper that died).
constexpr std::uint64_t dropping_token = ~std::uint64_t{0};
/// The process a claim token names (see claim_token).
std::int64_t pid_of_token(std::uint64_t token) noexcept {
  return static_cast<std::int64_t>(token >> 24);
}
/// claim_popped of a claim that takes no message (a restart).
constexpr std::uint64_t takes_nothing = ~std::uint64_t{0};

}  // namespace

message_ring::message_ring(shared_object& object, std::size_t header_offset,
                           std::size_t data_offset)
    : object_(object),
      header_(reinterpret_cast<ring_header*>(object.payload() + header_offset)),
      data_offset_(data_offset) {
  object.make_usable(header_offset, sizeof(ring_header));
}

void message_ring::initialise(std::size_t capacity, std::size_t maxsize) {
  if (capacity == 0 || (capacity & (capacity - 1)) != 0) {
    throw std::logic_error("multiproc: a message ring's capacity must be a power of two");
  }
  new (header_) ring_header{};
  header_->capacity = capacity;
  header_->maxsize = maxsize;
}

std::size_t message_ring::footprint(std::size_t size) noexcept {
  return (sizeof(message_head) + size + alignment - 1) / alignment * alignment;
}

bool message_ring::could_hold(std::size_t size) const noexcept {
  return footprint(size) <= header_->capacity;
}

std::uint64_t message_ring::items() const noexcept {
  // Removed first: a message is counted pushed before anyone can pop it.
  const std::uint64_t popped = header_->popped.load(std::memory_order_acquire);
  const std::uint64_t pushed = header_->pushed.load(std::memory_order_acquire);
  return pushed > popped ? pushed - popped : 0;
}

bool message_ring::empty() const noexcept {
  return header_->head.load(std::memory_order_acquire) ==
         header_->tail.load(std::memory_order_acquire);
}

void message_ring::copy_in(std::uint64_t position, const char* from, std::size_t size) {
  const std::size_t capacity = header_->capacity;
  while (size > 0) {
    const std::size_t at = static_cast<std::size_t>(place_of(position, capacity));
    const std::size_t piece = std::min(size, capacity - at);
    object_.make_usable(data_offset_ + at, piece);
    std::memcpy(object_.payload() + data_offset_ + at, from, piece);
    position += piece;
    from += piece;
    size -= piece;
  }
}

void message_ring::copy_out(std::uint64_t position, char* to, std::size_t size) {
  const std::size_t capacity = header_->capacity;
  while (size > 0) {
    const std::size_t at = static_cast<std::size_t>(place_of(position, capacity));
    const std::size_t piece = std::min(size, capacity - at);
    object_.make_usable(data_offset_ + at, piece);
    std::memcpy(to, object_.payload() + data_offset_ + at, piece);
    position += piece;
    to += piece;
    size -= piece;
  }
}

// ---- producers --------------------------------------------------------------------------------

bool message_ring::has_room(std::size_t size) {
  repair_locked();
  if (fits(size)) return true;
  // Seq_cst: a producer about to sleep registered (a sleeper) before this look; a consumer
  // moves `head`, then looks for sleepers. One of the two sees the other (and a producer that
  // sees the new `head` sees the count of messages taken that came with it).
  header_->head_seen = header_->head.load(std::memory_order_seq_cst);
  return fits(size);
}

bool message_ring::fits(std::size_t size) const noexcept {
  const ring_header& h = *header_;
  const std::uint64_t pushed = h.pushed.load(std::memory_order_relaxed);
  const std::uint64_t popped = h.popped.load(std::memory_order_acquire);
  if (h.maxsize != 0 && pushed > popped && pushed - popped >= h.maxsize) return false;
  const std::uint64_t tail = h.tail.load(std::memory_order_relaxed);
  return footprint(size) <= h.capacity - (tail - h.head_seen);
}

void message_ring::push(std::uint64_t fingerprint, const char* data, std::size_t size) {
  repair_locked();
  look_behind(footprint(size));
  const std::uint64_t tail = header_->tail.load(std::memory_order_relaxed);
  copy_in(tail + sizeof(message_head), data, size);
  append(fingerprint, size);
}

void message_ring::append(std::uint64_t fingerprint, std::size_t size) {
  ring_header& h = *header_;
  const std::uint64_t tail = h.tail.load(std::memory_order_relaxed);
  const message_head head{size, fingerprint};
  note_written(tail, footprint(size));
  copy_in(tail, reinterpret_cast<const char*>(&head), sizeof head);
  const std::uint64_t pushed = h.pushed.load(std::memory_order_relaxed);
  h.intent_tail = tail + footprint(size);
  h.intent_pushed = pushed;
  h.intent.store(intent_appending, std::memory_order_release);
  h.pushed.store(pushed + 1, std::memory_order_release);
  // Only now is the message there: a process that died above left the ring as it was (and
  // one that died between the two counts is undone by the next holder: repair_locked).
  h.tail.store(h.intent_tail, std::memory_order_release);
  h.intent.store(0, std::memory_order_release);
}

void message_ring::repair_locked() noexcept {
  ring_header& h = *header_;
  const std::uint64_t intent = h.intent.load(std::memory_order_acquire);
  if (intent == 0) return;
  // Seen under the lock, it is the intent of a holder that died holding it.
  if (intent == intent_appending) {
    if (h.tail.load(std::memory_order_relaxed) != h.intent_tail) {
      h.pushed.store(h.intent_pushed, std::memory_order_release);  // the message never was
    }
  } else {
    const std::uint64_t start = h.intent_tail;  // the restart is finished: the ring was empty
    h.head.store(start, std::memory_order_seq_cst);
    h.tail.store(start, std::memory_order_release);
    h.head_seen = h.released = start;
    h.next_look = start + look_stride;
  }
  h.intent.store(0, std::memory_order_release);
}

void message_ring::look_behind(std::uint64_t need) {
  ring_header& h = *header_;
  const std::uint64_t tail = h.tail.load(std::memory_order_relaxed);
  if (tail < h.next_look && need < look_stride) return;
  h.next_look = tail + look_stride;
  const std::uint64_t head = h.head.load(std::memory_order_acquire);
  h.head_seen = head;
  if (head == tail) {
    restart_if_empty();
  } else if (head - h.released >= release_stride) {
    give_back_passed_memory(head);
  }
}

void message_ring::restart_if_empty() noexcept {
  // Empty: the next message starts at the data area's start again, in pages still warm. The
  // reader claim keeps consumers off `head` meanwhile; busy, it waits for the next look.
  ring_header& h = *header_;
  if (place_of(h.tail.load(std::memory_order_relaxed), h.capacity) == 0) return;
  if (!try_claim_reader(false)) return;
  const std::uint64_t tail = h.tail.load(std::memory_order_relaxed);
  if (h.head.load(std::memory_order_relaxed) == tail) {
    const std::uint64_t start = next_start(tail, h.capacity);
    h.intent_tail = start;
    h.intent.store(intent_restarting, std::memory_order_release);
    h.head.store(start, std::memory_order_relaxed);
    h.tail.store(start, std::memory_order_release);
    h.intent.store(0, std::memory_order_release);
    h.head_seen = h.released = start;
    h.next_look = start + look_stride;
    give_back_read_memory();
  }
  release_reader();
}

bool message_ring::writing(bool check_liveness) noexcept {
  ring_claim& claim = header_->writer;
  if (claim.active == 0) return false;
  if (check_liveness && !os::still_running({claim.pid, claim.started})) {
    claim = {};
    return false;
  }
  return true;
}

namespace {
/// A writer is handed at most this much at a time: on Windows each window is committed as it
/// is handed out, so an item never commits much more than its size.
constexpr std::size_t window_limit = std::size_t{4} << 20;
}  // namespace

void message_ring::start_writing() {
  repair_locked();
  look_behind(std::numeric_limits<std::uint64_t>::max());  // a large message: look now
  const os::process_stamp self = os::this_process_stamp();
  header_->writer = {self.pid, self.started, 1};
}

char* message_ring::write_window(std::size_t offset, std::size_t& length) {
  repair_locked();
  ring_header& h = *header_;
  const std::uint64_t capacity = h.capacity;
  const std::uint64_t tail = h.tail.load(std::memory_order_relaxed);
  const std::uint64_t position = tail + sizeof(message_head) + offset;
  length = 0;
  if (position - h.head_seen >= capacity) {
    h.head_seen = h.head.load(std::memory_order_seq_cst);  // as in has_room()
    if (position - h.head_seen >= capacity) return nullptr;
  }
  const std::size_t at = static_cast<std::size_t>(place_of(position, capacity));
  length = static_cast<std::size_t>(
      std::min<std::uint64_t>({capacity - (position - h.head_seen), capacity - at, window_limit}));
  note_written(position, length);
  object_.make_usable(data_offset_ + at, length);
  return object_.payload() + data_offset_ + at;
}

void message_ring::finish_writing(std::uint64_t fingerprint, std::size_t size) {
  append(fingerprint, size);
  header_->writer = {};
}

void message_ring::abandon_writing() noexcept {
  header_->writer = {};
}

void message_ring::note_written(std::uint64_t position, std::size_t size) noexcept {
  const std::uint64_t capacity = header_->capacity;
  const std::uint64_t at = place_of(position, capacity);
  const std::uint64_t end = size >= capacity - at ? capacity : at + size;
  if (end > header_->touched.load(std::memory_order_relaxed)) {
    header_->touched.store(end, std::memory_order_relaxed);
  }
}

void message_ring::give_back_passed_memory(std::uint64_t head) noexcept {
  // Consumers are past `head` and this producer writes after the tail: no one is in there.
  const std::uint64_t capacity = header_->capacity;
  // Never a whole lap back: those places hold the messages after `head` now.
  const std::uint64_t tail = header_->tail.load(std::memory_order_relaxed);
  std::uint64_t from = std::max(header_->released, tail > capacity ? tail - capacity : 0);
  while (from < head) {
    const std::uint64_t at = place_of(from, capacity);
    const std::uint64_t piece = std::min(head - from, capacity - at);
    if (at + piece > warm_bytes) {
      const std::uint64_t start = std::max(at, warm_bytes);
      object_.discard(data_offset_ + static_cast<std::size_t>(start),
                      static_cast<std::size_t>(at + piece - start));
    }
    from += piece;
  }
  header_->released = head;
}

void message_ring::give_back_read_memory() noexcept {
  // Past the warm start, the pages messages passed through would otherwise stay allocated: a
  // queue that once held 1 GiB would hold on to it. They are given back once the ring is
  // empty again (one system call, and only after the ring went past its warm start).
  const std::uint64_t touched = header_->touched.load(std::memory_order_relaxed);
  if (touched <= warm_bytes) return;
  object_.discard(data_offset_ + warm_bytes, touched - warm_bytes);
  header_->touched.store(warm_bytes, std::memory_order_relaxed);
}

// ---- consumers --------------------------------------------------------------------------------

bool message_ring::try_claim_reader(bool to_take) noexcept {
  ring_header& h = *header_;
  std::uint64_t free = 0;
  if (!h.reader.compare_exchange_strong(free, claim_token(), std::memory_order_acq_rel,
                                        std::memory_order_relaxed)) {
    return false;
  }
  // Named before anything moves: a holder found dead with its pid named is undone from these.
  const os::process_stamp self = os::this_process_stamp();
  h.claim_head.store(h.head.load(std::memory_order_relaxed), std::memory_order_relaxed);
  h.claim_popped.store(to_take ? h.popped.load(std::memory_order_relaxed) : takes_nothing,
                       std::memory_order_relaxed);
  h.reader_started.store(self.started, std::memory_order_relaxed);
  h.reader_pid.store(self.pid, std::memory_order_release);
  return true;
}

void message_ring::release_reader() noexcept {
  header_->reader_pid.store(0, std::memory_order_relaxed);
  // Seq_cst: the releaser then looks for sleeping consumers, who registered before their
  // last look at the claim.
  header_->reader.store(0, std::memory_order_seq_cst);
}

bool message_ring::follow_up_needed() const noexcept {
  const ring_header& h = *header_;
  if (h.producers_waiting.load(std::memory_order_seq_cst) != 0 ||
      h.consumers_waiting.load(std::memory_order_seq_cst) != 0) {
    return true;
  }
  // Emptied after going past the warm start: give the memory back now, not at the next put.
  return h.touched.load(std::memory_order_relaxed) > warm_bytes && empty();
}

bool message_ring::reading(bool check_liveness) noexcept {
  ring_header& h = *header_;
  repair_locked();
  // Seq_cst: a consumer about to sleep registered (a sleeper) before this look; the
  // releaser drops the claim, then looks for sleepers.
  std::uint64_t token = h.reader.load(std::memory_order_seq_cst);
  if (token == 0) return false;
  if (!check_liveness) return true;
  if (token == dropping_token) {
    drop_dead_reader();  // drops run under this lock: its dropper died half-way
    return h.reader.load(std::memory_order_acquire) != 0;
  }
  // The holder names itself just after taking the claim; until then its token names its
  // process (without a start time). A token that changed meanwhile is a holder that runs.
  const std::int64_t pid = h.reader_pid.load(std::memory_order_acquire);
  const std::uint64_t started = h.reader_started.load(std::memory_order_relaxed);
  if (h.reader.load(std::memory_order_acquire) != token) return true;
  const os::process_stamp holder =
      pid != 0 ? os::process_stamp{pid, started} : os::process_stamp{pid_of_token(token), 0};
  if (os::still_running(holder)) return true;
  if (h.reader.compare_exchange_strong(token, dropping_token, std::memory_order_acq_rel)) {
    drop_dead_reader();
  }
  return h.reader.load(std::memory_order_acquire) != 0;
}

void message_ring::drop_dead_reader() noexcept {
  // The message it was reading is still the oldest, for the next reader, unless `head` moved:
  // then it was taken, and `popped` says so either way.
  ring_header& h = *header_;
  if (h.reader_pid.load(std::memory_order_acquire) != 0) {
    const std::uint64_t popped = h.claim_popped.load(std::memory_order_relaxed);
    if (popped != takes_nothing) {
      const bool moved =
          h.head.load(std::memory_order_relaxed) != h.claim_head.load(std::memory_order_relaxed);
      h.popped.store(moved ? popped + 1 : popped, std::memory_order_release);
    }
  }
  release_reader();
}

message_ring::take_outcome message_ring::try_take(std::string& out, std::size_t& length,
                                                  std::uint64_t& fingerprint, stretches& place,
                                                  bool& follow_up) {
  ring_header& h = *header_;
  follow_up = false;
  // Looked at before the claim is tried, so that an idle consumer only reads shared lines.
  if (h.head.load(std::memory_order_acquire) == h.tail.load(std::memory_order_acquire)) {
    return take_outcome::empty;
  }
  if (h.reader.load(std::memory_order_relaxed) != 0 || !try_claim_reader(true)) {
    return take_outcome::busy;
  }
  const std::uint64_t head = h.head.load(std::memory_order_relaxed);
  if (head == h.tail.load(std::memory_order_acquire)) {
    release_reader();
    follow_up = follow_up_needed();
    return take_outcome::empty;
  }
  try {
    return take_claimed(head, out, length, fingerprint, place, follow_up);
  } catch (...) {
    release_reader();  // the message stays, for the next reader (memory ran out, say)
    throw;
  }
}

message_ring::take_outcome message_ring::take_claimed(std::uint64_t head, std::string& out,
                                                      std::size_t& length,
                                                      std::uint64_t& fingerprint, stretches& place,
                                                      bool& follow_up) {
  ring_header& h = *header_;
  message_head message{};
  copy_out(head, reinterpret_cast<char*>(&message), sizeof message);
  const std::size_t size = static_cast<std::size_t>(message.size);
  fingerprint = message.fingerprint;
  if (size >= direct_threshold) {
    const std::size_t capacity = h.capacity;
    const std::size_t at = static_cast<std::size_t>(place_of(head + sizeof message, capacity));
    const std::size_t first = std::min(size, capacity - at);
    char* const data = object_.payload() + data_offset_;
    object_.make_usable(data_offset_ + at, first);
    if (size > first) object_.make_usable(data_offset_, size - first);
    place = {data + at, first, data, size - first, message.fingerprint};
    return take_outcome::in_place;  // the claim stays held until finish_reading()
  }
  length = size;
  if (out.size() < length) out.resize(length);  // only ever grown: a reused buffer stays warm
  copy_out(head + sizeof message, out.data(), length);
  remove_oldest(head, length);
  release_reader();
  follow_up = follow_up_needed();
  return take_outcome::taken;
}

bool message_ring::finish_reading() {
  const std::uint64_t head = header_->head.load(std::memory_order_relaxed);
  message_head message{};
  copy_out(head, reinterpret_cast<char*>(&message), sizeof message);
  remove_oldest(head, static_cast<std::size_t>(message.size));
  release_reader();
  return follow_up_needed();
}

void message_ring::remove_oldest(std::uint64_t head, std::size_t size) noexcept {
  ring_header& h = *header_;
  h.popped.store(h.popped.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  // Seq_cst: see has_room(). The bytes are copied out; producers may reuse them from now on.
  h.head.store(head + footprint(size), std::memory_order_seq_cst);
}

void message_ring::after_take_locked() noexcept {
  repair_locked();
  // A large message being written after the tail: the ring is not really empty.
  if (header_->writer.active != 0) return;
  if (header_->touched.load(std::memory_order_relaxed) > warm_bytes && empty()) {
    restart_if_empty();
  }
}

// ---- writing and reading in place ------------------------------------------------------------

ring_writer::~ring_writer() {
  if (!claimed_) return;
  try {
    shared_lock lock(object_);
    ring_.abandon_writing();
    object_.sync().wake_all();  // another writer may wait for the claim
  } catch (...) {
  }
}

void ring_writer::begin(std::string_view buffered, std::size_t) {
  {
    shared_lock lock(object_);
    wait_to_claim(lock);
    ring_.start_writing();
    claimed_ = true;
  }
  write(buffered.data(), buffered.size());
}

void ring_writer::write(const char* data, std::size_t size) {
  while (size > 0) {
    if (left_ == 0) next_window();
    const std::size_t piece = std::min(size, left_);
    std::memcpy(window_, data, piece);
    window_ += piece;
    left_ -= piece;
    written_ += piece;
    data += piece;
    size -= piece;
  }
}

void ring_writer::next_window() {
  shared_lock lock(object_);
  sleeper watch;
  for (;;) {
    window_ = ring_.write_window(written_, left_);
    if (left_ != 0) return;
    // Full with nothing but this message in it: it can never fit.
    if (ring_.empty()) too_large(written_ + 1);
    if (!watch.started()) {
      watch.start(
          ring_.header()
              .producers_waiting);  // then one more look before sleeping: no wake-up is lost
      continue;
    }
    wait_for_room(lock);
  }
}

void ring_writer::commit(std::uint64_t fingerprint) {
  shared_lock lock(object_);
  ring_.finish_writing(fingerprint, written_);
  claimed_ = false;
  committed_locked();
  object_.sync().wake_all();
}

ring_read_claim::~ring_read_claim() {
  if (!taken_) return;
  try {
    const bool follow_up = ring_.finish_reading();
    if (!follow_up) return;
    shared_lock lock(object_);
    ring_.after_take_locked();
    object_.sync().wake_all();  // room for writers; the next message for readers
  } catch (...) {
  }
}

}  // namespace multiproc::detail
