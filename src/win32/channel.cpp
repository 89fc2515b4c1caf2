// Channels on Windows: two anonymous pipes per parent/child pair.
#include "../os/channel.hpp"
#include "internal.hpp"

#include <algorithm>
#include <stdexcept>
#include <system_error>

#include <multiproc/errors.hpp>

namespace multiproc::detail::os {

namespace {

// ReadFile/WriteFile take a DWORD count; larger requests go in pieces of this size.
constexpr std::size_t max_io_chunk = std::size_t{1} << 30;

// The pipe buffer is only a hint to the system, but a large one lets a whole batch of tasks or
// a medium payload go through in one write without waiting for the reader to wake up.
constexpr DWORD pipe_buffer_hint = 1 << 20;

}  // namespace

std::size_t channel::read_some(void* buffer, std::size_t size) {
  if (size == 0) return 0;
  const auto wanted = static_cast<DWORD>(std::min(size, max_io_chunk));
  for (;;) {
    DWORD got = 0;
    if (!ReadFile(as_handle(read_.get()), buffer, wanted, &got, nullptr)) {
      const DWORD error = GetLastError();
      // The writer closed its end (or died): that is the end of the stream, not a failure.
      if (error == ERROR_BROKEN_PIPE || error == ERROR_HANDLE_EOF) return 0;
      throw std::system_error(static_cast<int>(error), std::system_category(), "ReadFile");
    }
    // A successful read of zero bytes is a zero-length write by the peer, not end of stream
    // (which pipes report as ERROR_BROKEN_PIPE): keep waiting for real data.
    if (got != 0) return got;
  }
}

bool channel::readable_now() const noexcept {
  DWORD available = 0;
  if (!PeekNamedPipe(as_handle(read_.get()), nullptr, 0, nullptr, &available, nullptr)) {
    return true;  // broken pipe (the writer is gone): a read returns end of stream at once
  }
  return available != 0;
}

void channel::write_all(const void* data, std::size_t size,
                        std::span<const native_handle> attached) {
  // Handles never ride along on Windows: pass_handle() put them into the receiver already.
  if (!attached.empty()) {
    throw std::invalid_argument("multiproc: handles cannot be attached to a Windows pipe");
  }
  const char* next = static_cast<const char*>(data);
  while (size != 0) {
    const auto chunk = static_cast<DWORD>(std::min(size, max_io_chunk));
    DWORD written = 0;
    if (!WriteFile(as_handle(write_.get()), next, chunk, &written, nullptr)) {
      const DWORD error = GetLastError();
      // ERROR_NO_DATA: "the pipe is being closed" — the reader is gone, as EPIPE on POSIX.
      if (error == ERROR_NO_DATA || error == ERROR_BROKEN_PIPE) {
        throw std::system_error(std::make_error_code(std::errc::broken_pipe), "WriteFile");
      }
      throw std::system_error(static_cast<int>(error), std::system_category(), "WriteFile");
    }
    next += written;
    size -= written;
  }
}

std::size_t channel::write_capacity() const noexcept {
  // The size given to CreatePipe is only a suggestion: ask the pipe what it buffers (the
  // reader's inbound quota bounds what a write can leave behind without waiting). A pipe that
  // reports nothing usable gets the smallest buffer Windows has been seen to use.
  constexpr std::size_t smallest_known_buffer = 4096;
  DWORD outbound = 0;
  DWORD inbound = 0;
  if (!write_ ||
      !GetNamedPipeInfo(as_handle(write_.get()), nullptr, &outbound, &inbound, nullptr)) {
    return smallest_known_buffer;
  }
  const std::size_t reported =
      inbound != 0 && outbound != 0 ? std::min(inbound, outbound) : std::max(inbound, outbound);
  if (reported == 0) return smallest_known_buffer;
  return std::min<std::size_t>(reported, pipe_buffer_hint);
}

std::pair<channel, channel> make_channel_pair() {
  // A null SECURITY_ATTRIBUTES makes both ends non-inheritable; spawn_child lends the child's
  // ends out explicitly, so no other CreateProcess in this program can pick them up.
  HANDLE down_read = nullptr, down_write = nullptr;  // parent -> child
  HANDLE up_read = nullptr, up_write = nullptr;      // child -> parent
  if (!CreatePipe(&down_read, &down_write, nullptr, pipe_buffer_hint)) {
    const DWORD error = GetLastError();
    throw start_error("cannot create a pipe",
                      std::error_code(static_cast<int>(error), std::system_category()));
  }
  if (!CreatePipe(&up_read, &up_write, nullptr, pipe_buffer_hint)) {
    const DWORD error = GetLastError();
    CloseHandle(down_read);
    CloseHandle(down_write);
    throw start_error("cannot create a pipe",
                      std::error_code(static_cast<int>(error), std::system_category()));
  }
  return {channel(as_native(up_read), as_native(down_write)),
          channel(as_native(down_read), as_native(up_write))};
}

owned_handle channel::take_attached() noexcept {
  return {};
}

void channel::close_write() noexcept {
  write_.reset();
}

std::uint64_t pass_handle(native_handle handle, const child& receiver,
                          std::vector<native_handle>&) {
  // Duplicated straight into the receiver: the value is valid there, and owned by it from now
  // on (if it never takes it, the handle closes when it exits).
  HANDLE there = nullptr;
  if (!DuplicateHandle(GetCurrentProcess(), as_handle(handle), as_handle(receiver.handle()), &there,
                       0, FALSE, DUPLICATE_SAME_ACCESS)) {
    throw std::system_error(last_error_code(), "DuplicateHandle");
  }
  return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(there));
}

owned_handle accept_handle(std::uint64_t token, channel&) {
  return owned_handle(static_cast<native_handle>(token), handle_kind::travelling);
}

void block_broken_pipe_signal_in_this_thread() noexcept {
  // Windows has no SIGPIPE: a write to a closed pipe fails with ERROR_NO_DATA instead.
}

}  // namespace multiproc::detail::os
