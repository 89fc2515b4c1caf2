// The backend seam, part 2: channels, the byte streams between a parent and one child, and
// how handles travel along them. Twins: src/posix/channel.cpp, src/win32/channel.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <utility>
#include <vector>

#include "child.hpp"
#include "handle.hpp"

namespace multiproc::detail::os {

/// One end of a duplex byte stream between a parent and one child. POSIX: a Unix stream
/// socket (held as the read handle; descriptors can ride along with the bytes, SCM_RIGHTS);
/// Windows: two anonymous pipes. Every handle is created close-on-exec / non-inheritable; only
/// a spawn hands one on, explicitly. Move-only; closing is idempotent.
class channel {
 public:
  channel() = default;
  /// POSIX: one socket; Windows: two pipe ends (write_end may be the same on POSIX: then only
  /// one handle is kept).
  channel(native_handle read_end, native_handle write_end) noexcept
      : read_(read_end), write_(write_end == read_end ? invalid_handle : write_end) {}

  /// Blocks until at least one byte is there; returns 0 at end of stream (peer closed).
  /// Descriptors that arrive with the bytes are kept for take_attached(). Throws
  /// std::system_error on any other failure.
  std::size_t read_some(void* buffer, std::size_t size);
  /// True if read_some() would return at once (bytes are there, or the peer closed). Never
  /// blocks, never throws. POSIX: poll() with no timeout; Windows: PeekNamedPipe.
  bool readable_now() const noexcept;
  /// Writes every byte, blocking as needed; `attached` handles (prepared by pass_handle())
  /// travel with the first of them. Throws std::system_error; a peer that is gone gives
  /// errc::broken_pipe (never SIGPIPE).
  void write_all(const void* data, std::size_t size, std::span<const native_handle> attached = {});
  /// Bytes the writing end can take while the peer reads nothing (its buffer).
  std::size_t write_capacity() const noexcept;
  /// POSIX: the oldest descriptor that arrived with the bytes read so far, now this process's
  /// (travelling kind); an empty handle if none is left. Windows: always empty.
  owned_handle take_attached() noexcept;
  /// Closes both ends (idempotent).
  void close() noexcept {
    read_.reset();
    write_.reset();
    attached_.clear();
  }
  /// Closes only the writing direction: the peer reads end of stream, this end can still read.
  void close_write() noexcept;
  bool is_open() const noexcept { return read_ || write_; }
  native_handle read_handle() const noexcept { return read_.get(); }
  native_handle write_handle() const noexcept { return write_ ? write_.get() : read_.get(); }

 private:
  owned_handle read_;
  owned_handle write_;
  std::deque<owned_handle> attached_;  ///< POSIX: arrived with the bytes, not yet taken
};

/// A connected pair: `first` is the parent's end, `second` the child's. Throws start_error.
std::pair<channel, channel> make_channel_pair();

/// Makes `handle` reach `receiver` with the next write on the channel to it. Returns the token
/// the receiver gives accept_handle(). POSIX: `handle` is added to `attached` (the caller
/// passes that to write_all and keeps `handle` open until then); the token is 0. Windows: the
/// handle is duplicated into the receiver, and the token is its value there. Throws
/// std::system_error.
std::uint64_t pass_handle(native_handle handle, const child& receiver,
                          std::vector<native_handle>& attached);
/// The receiving side: the handle `token` names, arrived on `from`. POSIX: the next attached
/// descriptor; Windows: the token itself. Throws std::runtime_error if nothing arrived.
owned_handle accept_handle(std::uint64_t token, channel& from);

/// Blocks SIGPIPE for the calling thread for good (a thread the library owns, or a worker's
/// main thread); no-op on Windows, which has no SIGPIPE.
void block_broken_pipe_signal_in_this_thread() noexcept;

}  // namespace multiproc::detail::os
