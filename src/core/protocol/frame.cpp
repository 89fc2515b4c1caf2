// Framing (see frame.hpp).
#include "frame.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <multiproc/errors.hpp>

namespace multiproc::detail {

void check_frame_size(std::size_t size) {
  if (size > max_frame_body) {
    throw serialization_error(serialization_error::phase::encode_arguments,
                              "the encoded call takes " + std::to_string(size) +
                                  " bytes, more than the 2 GiB a message may carry");
  }
}

std::size_t begin_frame(std::string& out, frame_kind kind, std::uint64_t id, std::uint8_t flags) {
  frame_header header{};
  header.kind = kind;
  header.flags = flags;
  header.id = id;
  const std::size_t at = out.size();
  out.append(reinterpret_cast<const char*>(&header), sizeof header);
  return at;
}

void end_frame(std::string& out, std::size_t at, std::size_t more) {
  const std::size_t body = out.size() - at - sizeof(frame_header) + more;
  check_frame_size(body);
  const auto size = static_cast<std::uint32_t>(body);
  std::memcpy(out.data() + at + offsetof(frame_header, body_size), &size, sizeof size);
}

// Frames follow each other at any offset, so fields are patched by copying, never through
// a frame_header reference (which could be misaligned).
void set_frame_flags(std::string& out, std::size_t at, std::uint8_t flags) {
  std::memcpy(out.data() + at + offsetof(frame_header, flags), &flags, sizeof flags);
}

void set_frame_elapsed(std::string& out, std::size_t at, std::uint32_t elapsed_us) {
  std::memcpy(out.data() + at + offsetof(frame_header, elapsed_us), &elapsed_us, sizeof elapsed_us);
}

std::string handle_trailer(const handle_list& handles, const os::child& receiver,
                           std::vector<os::native_handle>& attached) {
  if (handles.size() > 0xffff) {
    throw serialization_error(serialization_error::phase::encode_arguments,
                              "a call may carry at most 65535 queues, pipes or shared objects");
  }
  std::string trailer;
  for (const auto& handle : handles)
    append_u64(trailer, os::pass_handle(handle.get(), receiver, attached));
  return trailer;
}

void set_frame_handles(std::string& out, std::size_t at, std::size_t count) {
  const auto value = static_cast<std::uint16_t>(count);
  std::memcpy(out.data() + at + offsetof(frame_header, handles), &value, sizeof value);
}

void append_handles(std::string& out, std::size_t at, const handle_list& handles,
                    const os::child& receiver, std::vector<os::native_handle>& attached) {
  out += handle_trailer(handles, receiver, attached);
  set_frame_handles(out, at, handles.size());
}

handle_list take_handles(frame_header& header, const char* body, os::channel& from) {
  handle_list handles;
  if (header.handles == 0) return handles;
  const std::size_t trailer = std::size_t{header.handles} * 8;
  if (trailer > header.body_size) throw std::runtime_error("multiproc: truncated handle trailer");
  const char* tokens = body + header.body_size - trailer;
  handles.reserve(header.handles);
  for (std::size_t i = 0; i < header.handles; ++i) {
    std::uint64_t token;
    std::memcpy(&token, tokens + i * 8, sizeof token);
    handles.push_back(os::accept_handle(token, from));
  }
  header.body_size -= static_cast<std::uint32_t>(trailer);
  return handles;
}

void append_u64(std::string& out, std::uint64_t value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}

void append_string(std::string& out, std::string_view text) {
  const auto size = static_cast<std::uint32_t>(text.size());
  out.append(reinterpret_cast<const char*>(&size), sizeof size);
  out.append(text.data(), text.size());
}

void body_reader::need(std::size_t n) const {
  if (remaining() < n) throw std::runtime_error("multiproc: truncated frame body");
}
std::uint64_t body_reader::u64() {
  need(8);
  std::uint64_t value;
  std::memcpy(&value, data_, 8);
  data_ += 8;
  return value;
}
std::uint8_t body_reader::u8() {
  need(1);
  return static_cast<std::uint8_t>(*data_++);
}
std::string_view body_reader::string() {
  need(4);
  std::uint32_t size;
  std::memcpy(&size, data_, 4);
  data_ += 4;
  need(size);
  std::string_view text(data_, size);
  data_ += size;
  return text;
}

bool frame_reader::has_buffered_frame() const {
  if (end_ - begin_ < sizeof(frame_header)) return false;
  frame_header header;
  std::memcpy(&header, buffer_.get() + begin_, sizeof header);
  return end_ - begin_ >= sizeof header + header.body_size;
}

void frame_reader::move_to_front() noexcept {
  std::memmove(buffer_.get(), buffer_.get() + begin_, end_ - begin_);
  end_ -= begin_;
  begin_ = 0;
}

bool frame_reader::read_more() {
  const std::size_t got = channel_.read_some(buffer_.get() + end_, capacity_ - end_);
  end_ += got;
  return got != 0;
}

bool frame_reader::peek_header(frame_header& header) {
  while (end_ - begin_ < sizeof header) {
    if (begin_ > 0) move_to_front();
    if (!read_more()) return false;
  }
  std::memcpy(&header, buffer_.get() + begin_, sizeof header);
  return true;
}

bool frame_reader::next(frame_header& header, const char*& body) {
  for (;;) {
    if (end_ - begin_ >= sizeof(frame_header)) {
      std::memcpy(&header, buffer_.get() + begin_, sizeof header);
      if (header.body_size > max_frame_body) return false;  // not a frame of ours: stop here
      const std::size_t whole = sizeof header + header.body_size;
      if (end_ - begin_ >= whole) {
        body = buffer_.get() + begin_ + sizeof header;
        begin_ += whole;
        return true;
      }
      const std::size_t have = end_ - begin_;
      // A header's size is the peer's claim, not bytes it sent: the buffer grows to at most
      // twice what has arrived, so a torn or lying frame costs what was really sent.
      // It grows only once full (or to move the frame to the front), so a large frame costs
      // log2 copies, not one per read (a 256 MiB inline frame read in socket-buffer pieces
      // was copied about 1300 times: MPI ranks, which have no shared blocks, send large
      // payloads through the channel).
      const std::size_t room = std::min(whole, std::max(capacity_, 2 * have));
      if (room > capacity_ && (end_ == capacity_ || begin_ > 0)) {
        auto bigger = std::make_unique_for_overwrite<char[]>(room);
        std::memcpy(bigger.get(), buffer_.get() + begin_, have);
        end_ = have;
        begin_ = 0;
        buffer_ = std::move(bigger);
        capacity_ = room;
      }
    }
    if (begin_ == end_) {
      begin_ = end_ = 0;
    } else if (capacity_ - end_ < 4096 && begin_ > 0) {
      move_to_front();
    }
    if (!read_more()) return false;
  }
}

}  // namespace multiproc::detail
