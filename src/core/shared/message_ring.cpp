// The message ring (see message_ring.hpp).
#include "message_ring.hpp"

#include <algorithm>
#include <cstring>
#include <new>
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

bool message_ring::has_room(std::size_t size) const noexcept {
  if (header_->maxsize != 0 && header_->items >= header_->maxsize) return false;
  return footprint(size) <= header_->capacity - (header_->tail - header_->head);
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

void message_ring::push(std::uint64_t fingerprint, const char* data, std::size_t size) {
  const message_head head{size, fingerprint};
  note_written(header_->tail, footprint(size));
  copy_in(header_->tail, reinterpret_cast<const char*>(&head), sizeof head);
  copy_in(header_->tail + sizeof head, data, size);
  // Only now is the message there: a process that died above left the ring as it was.
  header_->tail += footprint(size);
  ++header_->items;
}

std::uint64_t message_ring::pop(std::string& out, std::size_t& length) {
  message_head head{};
  copy_out(header_->head, reinterpret_cast<char*>(&head), sizeof head);
  length = static_cast<std::size_t>(head.size);
  if (out.size() < length) out.resize(length);  // only ever grown: a reused buffer stays warm
  copy_out(header_->head + sizeof head, out.data(), length);
  remove_oldest(length);
  return head.fingerprint;
}

void message_ring::remove_oldest(std::size_t size) {
  header_->head += footprint(size);
  // With a large message being written after the tail, the ring is not really empty: nothing
  // moves and nothing is given back under the writer's feet.
  if (--header_->items == 0 && header_->writer.active == 0) {
    // Empty: the next message starts at the data area's start again, in pages still warm.
    const std::uint64_t capacity = header_->capacity;
    header_->head = header_->tail = next_start(header_->tail, capacity);
    header_->released = header_->head;
    give_back_read_memory();
  } else if (header_->head - header_->released >= release_stride) {
    give_back_passed_memory();
  }
}

// ---- claims -----------------------------------------------------------------------------------

namespace {
bool held(ring_claim& claim, bool check_liveness) noexcept {
  if (claim.active == 0) return false;
  if (check_liveness && !os::still_running({claim.pid, claim.started})) {
    claim = {};
    return false;
  }
  return true;
}
ring_claim claim_for_this_process() noexcept {
  const os::process_stamp self = os::this_process_stamp();
  return {self.pid, self.started, 1};
}
/// A writer is handed at most this much at a time: on Windows each window is committed as it
/// is handed out, so an item never commits much more than its size.
constexpr std::size_t window_limit = std::size_t{4} << 20;
}  // namespace

bool message_ring::writing(bool check_liveness) noexcept {
  return held(header_->writer, check_liveness);
}

bool message_ring::reading(bool check_liveness) noexcept {
  return held(header_->reader, check_liveness);
}

std::size_t message_ring::oldest_size() const {
  message_head head{};
  const_cast<message_ring*>(this)->copy_out(header_->head, reinterpret_cast<char*>(&head),
                                            sizeof head);
  return static_cast<std::size_t>(head.size);
}

message_ring::stretches message_ring::start_reading() {
  message_head head{};
  copy_out(header_->head, reinterpret_cast<char*>(&head), sizeof head);
  const std::size_t size = static_cast<std::size_t>(head.size);
  const std::size_t capacity = header_->capacity;
  const std::size_t at = static_cast<std::size_t>(place_of(header_->head + sizeof head, capacity));
  const std::size_t first = std::min(size, capacity - at);
  char* const data = object_.payload() + data_offset_;
  object_.make_usable(data_offset_ + at, first);
  if (size > first) object_.make_usable(data_offset_, size - first);
  header_->reader = claim_for_this_process();
  return {data + at, first, data, size - first, head.fingerprint};
}

void message_ring::finish_reading() {
  header_->reader = {};
  remove_oldest(oldest_size());
}

void message_ring::start_writing() {
  if (header_->items == 0 && header_->reader.active == 0) {
    // Empty: the message starts at the data area's start, in pages still warm.
    const std::uint64_t capacity = header_->capacity;
    header_->head = header_->tail = next_start(header_->tail, capacity);
    header_->released = header_->head;
  }
  header_->writer = claim_for_this_process();
}

char* message_ring::write_window(std::size_t offset, std::size_t& length) {
  const std::uint64_t capacity = header_->capacity;
  const std::uint64_t in_use = header_->tail - header_->head + sizeof(message_head) + offset;
  length = 0;
  if (in_use >= capacity) return nullptr;
  const std::uint64_t position = header_->tail + sizeof(message_head) + offset;
  const std::size_t at = static_cast<std::size_t>(place_of(position, capacity));
  length = static_cast<std::size_t>(
      std::min<std::uint64_t>({capacity - in_use, capacity - at, window_limit}));
  note_written(position, length);
  object_.make_usable(data_offset_ + at, length);
  return object_.payload() + data_offset_ + at;
}

void message_ring::finish_writing(std::uint64_t fingerprint, std::size_t size) {
  const message_head head{size, fingerprint};
  note_written(header_->tail, footprint(size));
  copy_in(header_->tail, reinterpret_cast<const char*>(&head), sizeof head);
  header_->tail += footprint(size);
  ++header_->items;
  header_->writer = {};
}

void message_ring::abandon_writing() noexcept {
  header_->writer = {};
}

void message_ring::give_back_passed_memory() noexcept {
  const std::uint64_t capacity = header_->capacity;
  std::uint64_t from = header_->released;
  while (from < header_->head) {
    const std::uint64_t at = place_of(from, capacity);
    const std::uint64_t piece = std::min(header_->head - from, capacity - at);
    if (at + piece > warm_bytes) {
      const std::uint64_t start = std::max(at, warm_bytes);
      object_.discard(data_offset_ + static_cast<std::size_t>(start),
                      static_cast<std::size_t>(at + piece - start));
    }
    from += piece;
  }
  header_->released = header_->head;
}

void message_ring::note_written(std::uint64_t position, std::size_t size) noexcept {
  const std::uint64_t capacity = header_->capacity;
  const std::uint64_t at = place_of(position, capacity);
  const std::uint64_t end = size >= capacity - at ? capacity : at + size;
  if (end > header_->touched) header_->touched = end;
}

void message_ring::give_back_read_memory() noexcept {
  // Past the warm start, the pages messages passed through would otherwise stay allocated: a
  // queue that once held 1 GiB would hold on to it. They are given back once the ring is
  // empty again (one system call, and only after the ring went past its warm start).
  if (header_->touched <= warm_bytes) return;
  object_.discard(data_offset_ + warm_bytes, header_->touched - warm_bytes);
  header_->touched = warm_bytes;
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
  for (;;) {
    window_ = ring_.write_window(written_, left_);
    if (left_ != 0) return;
    // Full with nothing but this message in it: it can never fit.
    if (ring_.header().items == 0) too_large(written_ + 1);
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
    shared_lock lock(object_);
    ring_.finish_reading();
    object_.sync().wake_all();  // room for writers; the next message for readers
  } catch (...) {
  }
}

}  // namespace multiproc::detail
