// The message ring (see message_ring.hpp).
#include "message_ring.hpp"

#include <algorithm>
#include <cstring>
#include <new>

#include <multiproc/errors.hpp>

namespace multiproc::detail {

namespace {
/// Each message: its size and its type's fingerprint, then its bytes, padded to 8.
struct message_head {
  std::uint64_t size;
  std::uint64_t fingerprint;
};
constexpr std::size_t alignment = 8;
/// Read memory is given back in stretches of at least this much (one system call each).
constexpr std::uint64_t give_back_stride = std::uint64_t{4} << 20;
}  // namespace

// ---- holders ----------------------------------------------------------------------------------

holder_table::entry* holder_table::find(const os::process_stamp& process) noexcept {
  for (auto& e : entries) {
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
    for (auto& e : entries) {
      if ((e.count | e.pending | e.reserved) == 0) {
        e = {process.pid, process.started, 0, 0, 0};
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
  for (auto& e : entries) {
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
    const std::size_t at = static_cast<std::size_t>(position % capacity);
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
    const std::size_t at = static_cast<std::size_t>(position % capacity);
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
  copy_in(header_->tail, reinterpret_cast<const char*>(&head), sizeof head);
  copy_in(header_->tail + sizeof head, data, size);
  // Only now is the message there: a process that died above left the ring as it was.
  header_->tail += footprint(size);
  ++header_->items;
}

std::uint64_t message_ring::pop(std::string& out) {
  message_head head{};
  copy_out(header_->head, reinterpret_cast<char*>(&head), sizeof head);
  out.resize(static_cast<std::size_t>(head.size));
  copy_out(header_->head + sizeof head, out.data(), out.size());
  header_->head += footprint(static_cast<std::size_t>(head.size));
  --header_->items;
  give_back_read_memory();
  return head.fingerprint;
}

void message_ring::give_back_read_memory() noexcept {
  // The pages a queue's messages passed through would otherwise stay allocated: a queue that
  // once held 1 GiB would hold on to it. Whole stretches are given back as reading moves on.
  if (header_->head - header_->discarded < give_back_stride) return;
  const std::size_t capacity = header_->capacity;
  std::uint64_t from = header_->discarded;
  while (from < header_->head) {
    const std::size_t at = static_cast<std::size_t>(from % capacity);
    const std::size_t piece =
        static_cast<std::size_t>(std::min<std::uint64_t>(header_->head - from, capacity - at));
    object_.discard(data_offset_ + at, piece);
    from += piece;
  }
  header_->discarded = header_->head;
}

}  // namespace multiproc::detail
