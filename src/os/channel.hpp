// The backend seam, part 2: channels, the byte streams between a parent and one child.
// Twins: src/posix/channel.cpp, src/win32/channel.cpp.
#pragma once

#include <cstddef>
#include <utility>

#include "handle.hpp"

namespace multiproc::detail::os {

/// One end of a duplex byte stream between a parent and one child (two anonymous pipes).
/// Every handle is created close-on-exec / non-inheritable; only a spawn hands one on,
/// explicitly. Move-only; closing is idempotent.
class channel {
 public:
  channel() = default;
  channel(native_handle read_end, native_handle write_end) noexcept
      : read_(read_end), write_(write_end) {}

  /// Blocks until at least one byte is there; returns 0 at end of stream (peer closed).
  /// Throws std::system_error on any other failure.
  std::size_t read_some(void* buffer, std::size_t size);
  /// True if read_some() would return at once (bytes are there, or the peer closed). Never
  /// blocks, never throws. POSIX: poll() with no timeout; Windows: PeekNamedPipe.
  bool readable_now() const noexcept;
  /// Writes every byte, blocking as needed. Throws std::system_error; a peer that is gone
  /// gives errc::broken_pipe (never SIGPIPE).
  void write_all(const void* data, std::size_t size);
  /// Bytes the writing end can take while the peer reads nothing (the pipe's buffer).
  std::size_t write_capacity() const noexcept;
  /// Closes both ends (idempotent).
  void close() noexcept {
    read_.reset();
    write_.reset();
  }
  /// Closes only the writing end: the peer reads end of stream, this end can still read.
  void close_write() noexcept { write_.reset(); }
  bool is_open() const noexcept { return read_ || write_; }
  native_handle read_handle() const noexcept { return read_.get(); }
  native_handle write_handle() const noexcept { return write_.get(); }

 private:
  owned_handle read_;
  owned_handle write_;
};

/// A connected pair: `first` is the parent's end, `second` the child's. Throws start_error.
std::pair<channel, channel> make_channel_pair();

/// Blocks SIGPIPE for the calling thread for good (a thread the library owns, or a worker's
/// main thread); no-op on Windows, which has no SIGPIPE.
void block_broken_pipe_signal_in_this_thread() noexcept;

}  // namespace multiproc::detail::os
