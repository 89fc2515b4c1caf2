// Framing: every message between a parent and its child is one frame, a fixed header and a
// body (its last part: the tokens of the handles it carries). This file knows headers and
// bodies as bytes; what a body means belongs to its message family (hello.hpp, task.hpp,
// result.hpp, control.hpp, ledger.hpp), each with its writer and its reader side by side. To
// add a message: add its kind here, then a family file like control.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../../os/channel.hpp"
#include "../../os/child.hpp"
#include "../../os/handle.hpp"

namespace multiproc::detail {

enum class frame_kind : std::uint8_t {
  // parent -> child
  hello = 1,        ///< hello.hpp: spawn only; magic, secret, image identity, role
  task = 2,         ///< task.hpp: run a call; the child answers with `result`
  initializer = 3,  ///< task.hpp: run a call before any task; failure answers `initializer_failed`
  release = 4,      ///< result.hpp: the parent has mapped the result block with this id
  stop = 5,         ///< control.hpp: finish and exit
  run_once = 6,     ///< task.hpp: mp::process: run this call, then exit
  ledger = 7,       ///< ledger.hpp: where the worker's claim word is (before the second task
                    ///< it holds)
  forkserver_setup = 8,  ///< forkserver.hpp: a fork server's preload calls and request link
  // child -> parent
  ready = 10,               ///< control.hpp: the initializer (or the preload) ran
  result = 11,              ///< result.hpp: the outcome of one task
  initializer_failed = 12,  ///< control.hpp: why the initializer failed
  skipped = 13,             ///< ledger.hpp: a task the pool took back, not run here
  ledger_refused = 14,      ///< ledger.hpp: the worker could not map its claim word; it exits
};

enum frame_flags : std::uint8_t {
  body_in_block = 1,  ///< the body is {u64 token, u64 size} naming a shared block
};

struct frame_header {
  std::uint32_t body_size;  ///< everything after the header, the handle trailer included
  frame_kind kind;
  std::uint8_t flags;
  std::uint16_t handles;     ///< handles the frame carries: a trailer of one u64 token each
  std::uint32_t elapsed_us;  ///< result: how long the task ran (drives the scheduler's depth)
  std::uint32_t reserved2;
  std::uint64_t id;  ///< the task a task/result/release frame is about
};
static_assert(sizeof(frame_header) == 24);

/// Largest frame body; a larger call (an mp::process or initializer argument) is refused.
inline constexpr std::size_t max_frame_body = std::size_t{1} << 31;
/// Throws serialization_error if a call of `size` bytes cannot travel in one frame.
void check_frame_size(std::size_t size);

/// Appends a header; returns its offset so the body size can be patched by end_frame.
std::size_t begin_frame(std::string& out, frame_kind kind, std::uint64_t id,
                        std::uint8_t flags = 0);
/// Patches the body size of the frame begun at `at`; `more` bytes of its body are not in
/// `out` (the caller writes them to the channel right after it). Throws serialization_error
/// if the body is too large.
void end_frame(std::string& out, std::size_t at, std::size_t more = 0);
/// Patch fields of the frame begun at `at` that are known only at its end (a result).
void set_frame_flags(std::string& out, std::size_t at, std::uint8_t flags);
void set_frame_elapsed(std::string& out, std::size_t at, std::uint32_t elapsed_us);

/// Handles travelling with a message (a call's arguments' queues, pipes, shared objects), in
/// the order its bytes name them.
using handle_list = std::vector<os::owned_handle>;

/// Appends the handle trailer of the frame begun at `at` (call it last, before end_frame): one
/// token per handle, as os::pass_handle() makes them for `receiver`; on POSIX the handles go
/// into `attached`, to be written with the frame (write_all's `attached`), and must stay open
/// until then. Throws std::system_error, or serialization_error past 65535 handles.
void append_handles(std::string& out, std::size_t at, const handle_list& handles,
                    const os::child& receiver, std::vector<os::native_handle>& attached);
/// The same trailer as a string of its own, for a frame whose body is written in pieces; the
/// frame's handle count is then set with set_frame_handles().
std::string handle_trailer(const handle_list& handles, const os::child& receiver,
                           std::vector<os::native_handle>& attached);
void set_frame_handles(std::string& out, std::size_t at, std::size_t count);
/// The handles a frame read from `from` carries, taken from its trailer (they must be taken
/// for every such frame, run or not, so the next frame finds its own). Shortens
/// header.body_size by the trailer. Throws std::runtime_error if the frame is malformed.
handle_list take_handles(frame_header& header, const char* body, os::channel& from);

void append_u64(std::string& out, std::uint64_t value);
/// A u32 length, then the bytes.
void append_string(std::string& out, std::string_view text);

/// Reads values back from a frame body; throws std::runtime_error when it runs short.
class body_reader {
 public:
  body_reader(const char* data, std::size_t size) : data_(data), end_(data + size) {}
  std::uint64_t u64();
  std::uint8_t u8();
  std::string_view string();
  const char* position() const { return data_; }
  std::size_t remaining() const { return static_cast<std::size_t>(end_ - data_); }

 private:
  void need(std::size_t n) const;
  const char* data_;
  const char* end_;
};

/// Reads whole frames from a channel, buffering what arrives beyond the current frame.
class frame_reader {
 public:
  explicit frame_reader(os::channel& channel) : channel_(channel) {}
  /// The next whole frame, reading as needed; false at end of stream (or a torn frame). The
  /// body stays valid until the next call. Throws std::system_error if reading fails.
  bool next(frame_header& header, const char*& body);
  /// True if a whole frame is already buffered (no read needed).
  bool has_buffered_frame() const;
  /// Reads until the next frame's header has arrived and copies it to `header`, leaving the
  /// frame to next(): a first frame can be judged by its claimed size before its body is
  /// waited for. False at end of stream. Throws std::system_error if reading fails.
  bool peek_header(frame_header& header);

 private:
  /// Moves the unread bytes to the buffer's start.
  void move_to_front() noexcept;
  /// Reads what the channel has into the buffer's free end; false at end of stream.
  bool read_more();
  os::channel& channel_;
  // Not zeroed: a child reads its first frames into the first page, and zeroing 64 KiB cost
  // every forked child 15 page faults (about a fifth of a fork server start) for nothing.
  std::unique_ptr<char[]> buffer_ = std::make_unique_for_overwrite<char[]>(64 * 1024);
  std::size_t capacity_ = 64 * 1024;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

}  // namespace multiproc::detail
