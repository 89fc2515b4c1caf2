// The codec under every message body: streams that cereal archives write into and read from.
// Writing goes to a std::string and, past spill_threshold, straight into a shared block the
// peer maps (so a huge payload is written once); reading comes from memory and can give a
// consumed block's pages back as it goes. The cereal glue for values, tuples and numeric
// blocks is in include/multiproc/detail/call.hpp (the templates must be in headers).
#pragma once

#include <cstddef>
#include <istream>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>

#include "../../os/shared_block.hpp"

namespace multiproc::detail {

/// Largest body that travels through the channel; larger payloads go through a shared block.
inline constexpr std::size_t spill_threshold = 128 * 1024;

/// A stream reading [data, data + size), reused per thread. With `consumed` (the shared block
/// the bytes lie in, read by nobody after this), each stretch already read is given back to
/// the system (discard()), so a huge argument is not held twice while it is decoded.
std::istream& memory_input(const char* data, std::size_t size,
                           os::shared_block* consumed = nullptr);

/// Reads [first, first + first_size) then [second, second + second_size) as one stream (a
/// message that wraps around a ring's end), reused per thread.
std::istream& split_input(const char* first, std::size_t first_size, const char* second,
                          std::size_t second_size);

/// Where an encoding goes once it grows past its threshold (output_lease::open): a shared
/// block (a pool payload), a message ring (a large queue item). May throw; the encoding then
/// fails with what it threw.
class spill_target {
 public:
  virtual ~spill_target() = default;
  /// The encoding passed the threshold: `buffered` is what it wrote so far, and `incoming`
  /// bytes are about to follow (a hint for sizing).
  virtual void begin(std::string_view buffered, std::size_t incoming) = 0;
  /// The next bytes, after begin().
  virtual void write(const char* data, std::size_t size) = 0;
};

/// Builds this thread's reusable decoding and encoding streams now, if they are not yet: a
/// child forked from this thread then inherits them built. Throws std::bad_alloc.
void prepare_thread_codec();

struct output_slot;
/// A stream writing into a string, leased for one scope: each thread keeps a few (streams are
/// costly to construct) for nested leases -- a task's result frame is open while the task
/// puts on a queue, a serialize() may itself submit work; past those, a lease gets a fresh one.
class output_lease {
 public:
  output_lease();
  ~output_lease();
  output_lease(const output_lease&) = delete;
  output_lease& operator=(const output_lease&) = delete;
  /// Points the stream at `out` from `start` on. If `allow_block` (and shared blocks exist
  /// here), once the bytes from `start` pass spill_threshold they move into `*block` (created
  /// then, `*block_size` tracking the bytes written) and `out` is cut back to `start`.
  std::ostream& open(std::string* out, std::size_t start, bool allow_block = false,
                     os::shared_block* block = nullptr, std::size_t* block_size = nullptr);
  /// Points the stream at `out` from `start` on; with a `target`, once the bytes from `start`
  /// would pass `threshold` they go to the target (begin(), then write()) and `out` is cut
  /// back to `start`.
  std::ostream& open(std::string* out, std::size_t start, spill_target* target,
                     std::size_t threshold);

 private:
  output_slot* slot_;
  std::unique_ptr<output_slot> own_;
};

struct buffer_slot;
/// A buffer for one message (a queue item, a pipe message), leased per thread and reused, so
/// its memory stays warm from one message to the next; nested uses get the thread's next few
/// buffers, then fresh ones. Only buffers up to 64 MiB are kept between uses.
class message_buffer {
 public:
  message_buffer();
  ~message_buffer();
  message_buffer(const message_buffer&) = delete;
  message_buffer& operator=(const message_buffer&) = delete;
  /// The bytes: the first `length` of them are the message (the string may be longer).
  std::string& bytes() noexcept { return *bytes_; }
  std::size_t length = 0;

 private:
  std::string* bytes_;
  buffer_slot* slot_ = nullptr;  ///< the thread's buffer leased, if one was free
  std::unique_ptr<std::string> own_;
};

struct message_codec;
/// Encodes `*value` with `codec` into `out` -- or, with a `direct` target, past `threshold`
/// bytes into that target (`out` then holds nothing). Throws serialization_error
/// (encode_message); what the target throws passes through as it is.
void encode_value(message_buffer& out, const message_codec& codec, const void* value,
                  spill_target* direct = nullptr, std::size_t threshold = 0);
/// Decodes [data, data + size), then [then, then + then_size), with `codec` into `*value`.
/// Throws serialization_error (decode_message).
void decode_value(const char* data, std::size_t size, const message_codec& codec, void* value,
                  const char* then = nullptr, std::size_t then_size = 0);

}  // namespace multiproc::detail
