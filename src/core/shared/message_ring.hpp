// A ring of messages in a shared object's memory: what mp::queue and mp::pipe's connections
// carry. Every operation runs with the object's lock held (shared_lock). Messages are copied in
// whole and out whole, and the ring's positions move only after a copy is complete, so a
// process killed in the middle of put or get leaves no torn message: it is there whole, or
// not at all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "../../os/sync.hpp"
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

/// The state of one ring, in shared memory after the object's header.
struct ring_header {
  std::uint64_t capacity;    ///< bytes in the data area
  std::uint64_t head;        ///< position of the oldest message (grows for ever)
  std::uint64_t tail;        ///< position after the newest
  std::uint64_t items;       ///< messages in the ring
  std::uint64_t maxsize;     ///< most messages it may hold (0: as many as fit)
  std::uint64_t unfinished;  ///< joinable queues: put and not yet task_done
  std::uint64_t touched;     ///< the data area's pages past warm_bytes up to here may be in use
  std::uint64_t released;    ///< while streaming: read memory before this position given back
  std::uint64_t shared;      ///< it has been handed to another process (end of stream can come)
  holder_table holders;
};

class message_ring {
 public:
  /// The ring whose header is at `header_offset` of `object`'s payload and whose data area
  /// (`capacity` bytes) follows at `data_offset`.
  message_ring(shared_object& object, std::size_t header_offset, std::size_t data_offset);
  /// Sets a fresh ring up (at creation, lock not needed yet).
  void initialise(std::size_t capacity, std::size_t maxsize);

  ring_header& header() const noexcept { return *header_; }
  /// Bytes a message of `size` bytes takes in the ring.
  static std::size_t footprint(std::size_t size) noexcept;
  /// Whether a message of `size` bytes could ever fit (the data area's size).
  bool could_hold(std::size_t size) const noexcept;
  /// Whether it fits now (room, and fewer than maxsize messages).
  bool has_room(std::size_t size) const noexcept;
  bool empty() const noexcept { return header_->items == 0; }
  /// Appends a message (has_room() must hold).
  void push(std::uint64_t fingerprint, const char* data, std::size_t size);
  /// Removes the oldest message (not empty()) into `out` (its first `length` bytes, the string
  /// grown as needed, never shrunk); returns its fingerprint.
  std::uint64_t pop(std::string& out, std::size_t& length);

 private:
  void copy_in(std::uint64_t position, const char* from, std::size_t size);
  void copy_out(std::uint64_t position, char* to, std::size_t size);
  void note_written(std::uint64_t position, std::size_t size) noexcept;
  void give_back_read_memory() noexcept;
  void give_back_passed_memory() noexcept;

  shared_object& object_;
  ring_header* header_;
  std::size_t data_offset_;
};

}  // namespace multiproc::detail
