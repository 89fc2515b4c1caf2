// The codec's streams (see codec.hpp).
#include "codec.hpp"

#include <algorithm>
#include <streambuf>

#include <multiproc/config.hpp>
#include <multiproc/detail/archive.hpp>
#include <multiproc/detail/message.hpp>
#include <multiproc/errors.hpp>

#include "../../os/system.hpp"

namespace multiproc::detail {

// The key function: the class's type information lives in the library, once.
sized_input_buffer::~sized_input_buffer() = default;

void prepare_fresh_storage(void* data, std::size_t bytes) noexcept {
  os::prepare_fresh_memory(data, bytes);
}

namespace {

/// The pool's spill target: a shared block the peer maps, created at the spill and doubled as
/// it fills.
class block_spill final : public spill_target {
 public:
  void reset(os::shared_block* block, std::size_t* block_size) {
    block_ = block;
    block_size_ = block_size;
    used_ = 0;
  }
  void begin(std::string_view buffered, std::size_t incoming) override {
    *block_ = os::shared_block::create(std::max(buffered.size() + incoming, 2 * spill_threshold));
    used_ = 0;
    write(buffered.data(), buffered.size());
  }
  void write(const char* data, std::size_t size) override {
    if (used_ + size > block_->size()) block_->grow(std::max(used_ + size, block_->size() * 2));
    block_->write(used_, data, size);
    used_ += size;
    *block_size_ = used_;
  }

 private:
  os::shared_block* block_ = nullptr;
  std::size_t* block_size_ = nullptr;
  std::size_t used_ = 0;
};

/// Writes into a std::string; once the bytes from `start` would pass `threshold` (when there is
/// a target), hands them to the spill target and goes on writing there, so a huge payload is
/// written once, straight into memory the other process reads.
class spill_buffer final : public std::streambuf {
 public:
  void reset(std::string* out, std::size_t start, spill_target* target, std::size_t threshold) {
    out_ = out;
    start_ = start;
    target_ = target;
    threshold_ = threshold;
    spilled_ = false;
  }

 protected:
  int_type overflow(int_type ch) override {
    if (traits_type::eq_int_type(ch, traits_type::eof())) return traits_type::not_eof(ch);
    const char c = traits_type::to_char_type(ch);
    xsputn(&c, 1);
    return ch;
  }

  std::streamsize xsputn(const char* data, std::streamsize count) override {
    const auto n = static_cast<std::size_t>(count);
    if (!spilled_) {
      if (target_ == nullptr || out_->size() - start_ + n <= threshold_) {
        out_->append(data, n);
        return count;
      }
      target_->begin(std::string_view(out_->data() + start_, out_->size() - start_), n);
      out_->resize(start_);
      spilled_ = true;
    }
    target_->write(data, n);
    return count;
  }

 private:
  std::string* out_ = nullptr;
  std::size_t start_ = 0;
  spill_target* target_ = nullptr;
  std::size_t threshold_ = 0;
  bool spilled_ = false;
};

class memory_buffer final : public sized_input_buffer {
 public:
  std::size_t bytes_left() const noexcept override {
    return static_cast<std::size_t>(end_ - gptr()) + then_size_;
  }
  void reset(const char* data, std::size_t size, os::shared_block* consumed,
             const char* then = nullptr, std::size_t then_size = 0) {
    begin_ = const_cast<char*>(data);  // read-only use: no put area is ever set
    end_ = begin_ + size;
    consumed_ = consumed;
    then_ = const_cast<char*>(then);
    then_size_ = then_size;
    if (consumed_ == nullptr) {
      setg(begin_, begin_, end_);
    } else {
      enter_window(begin_);
    }
  }

 protected:
  // Only a consumed block has windows: each one read is discarded as the next is entered.
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    if (consumed_ == nullptr && then_size_ != 0) {  // the second stretch of a split message
      begin_ = then_;
      end_ = then_ + then_size_;
      then_size_ = 0;
      setg(begin_, begin_, end_);
      return traits_type::to_int_type(*gptr());
    }
    if (consumed_ == nullptr || egptr() == end_) return traits_type::eof();
    char* const finished = eback();
    consumed_->discard(static_cast<std::size_t>(finished - consumed_->data()),
                       static_cast<std::size_t>(egptr() - finished));
    enter_window(egptr());
    return traits_type::to_int_type(*gptr());
  }

 private:
  /// Large enough that discarding costs nothing next to the copy, small enough that the
  /// mapped and decoded copies of a huge argument barely overlap.
  static constexpr std::size_t window = std::size_t{8} << 20;
  /// The block was mapped without its pages: each window is faulted in as it is entered.
  void enter_window(char* from) {
    char* const to = static_cast<std::size_t>(end_ - from) <= window ? end_ : from + window;
    consumed_->prefetch(static_cast<std::size_t>(from - consumed_->data()),
                        static_cast<std::size_t>(to - from));
    setg(from, from, to);
  }
  // xsgetn's default reads through underflow(), so a read spanning both stretches works.
  char* begin_ = nullptr;
  char* end_ = nullptr;
  os::shared_block* consumed_ = nullptr;
  char* then_ = nullptr;
  std::size_t then_size_ = 0;
};

struct input_slot {
  memory_buffer buffer;
  std::istream stream{&buffer};
};

}  // namespace

struct output_slot {
  spill_buffer buffer;
  block_spill block;
  std::ostream stream{&buffer};
  bool busy = false;
};

namespace {
/// This thread's own `Slot`, made at its first use. Where thread_local destructors are broken
/// (config.hpp) it is never destroyed: one small allocation per thread that used the library.
template <class Slot>
Slot& per_thread() {
#if defined(MULTIPROC_DETAIL_THREAD_LOCAL_DESTRUCTORS_BROKEN)
  thread_local Slot* slot = new Slot;
  return *slot;
#else
  thread_local Slot slot;
  return slot;
#endif
}
/// A thread's reusable slots of one kind, one per nesting level up to `levels`: the slot of
/// a task's result frame is busy while the task itself puts on a queue, and constructing a
/// stream per message costs more than the message.
template <class Slot>
struct slot_pool {
  static constexpr std::size_t levels = 4;
  std::unique_ptr<Slot> slots[levels];
};
/// Leases this thread's first free slot of the kind (made at first use); nullptr when every
/// level is busy.
template <class Slot>
Slot* lease_slot() {
  for (std::unique_ptr<Slot>& slot : per_thread<slot_pool<Slot>>().slots) {
    if (!slot) slot = std::make_unique<Slot>();
    if (!slot->busy) {
      slot->busy = true;
      return slot.get();
    }
  }
  return nullptr;
}
input_slot& thread_input() {
  return per_thread<input_slot>();
}
}  // namespace

std::istream& memory_input(const char* data, std::size_t size, os::shared_block* consumed) {
  input_slot& slot = thread_input();
  slot.buffer.reset(data, size, consumed);
  slot.stream.clear();
  return slot.stream;
}

std::istream& split_input(const char* first, std::size_t first_size, const char* second,
                          std::size_t second_size) {
  input_slot& slot = thread_input();
  slot.buffer.reset(first, first_size, nullptr, second, second_size);
  slot.stream.clear();
  return slot.stream;
}

void prepare_thread_codec() {
  (void)thread_input();
  if (output_slot* slot = lease_slot<output_slot>()) slot->busy = false;
}

output_lease::output_lease() : slot_(lease_slot<output_slot>()) {
  if (slot_ == nullptr) {
    own_ = std::make_unique<output_slot>();
    slot_ = own_.get();
    slot_->busy = true;
  }
  slot_->stream.clear();
}

output_lease::~output_lease() {
  slot_->busy = false;
}

std::ostream& output_lease::open(std::string* out, std::size_t start, bool allow_block,
                                 os::shared_block* block, std::size_t* block_size) {
  const bool spills = allow_block && block != nullptr && os::shared_block::supported();
  if (spills) slot_->block.reset(block, block_size);
  return open(out, start, spills ? &slot_->block : nullptr, spill_threshold);
}

std::ostream& output_lease::open(std::string* out, std::size_t start, spill_target* target,
                                 std::size_t threshold) {
  slot_->buffer.reset(out, start, target, threshold);
  slot_->stream.clear();
  return slot_->stream;
}

struct buffer_slot {
  std::string bytes;
  bool busy = false;
};

namespace {
/// Larger buffers are given back after use rather than kept warm for the next message.
constexpr std::size_t kept_buffer = std::size_t{64} << 20;
}  // namespace

message_buffer::message_buffer() : slot_(lease_slot<buffer_slot>()) {
  if (slot_ != nullptr) {
    bytes_ = &slot_->bytes;
  } else {
    own_ = std::make_unique<std::string>();
    bytes_ = own_.get();
  }
}

message_buffer::~message_buffer() {
  if (slot_ == nullptr) return;
  if (slot_->bytes.capacity() > kept_buffer) std::string().swap(slot_->bytes);
  slot_->busy = false;
}

void encode_value(message_buffer& out, const message_codec& codec, const void* value,
                  spill_target* direct, std::size_t threshold) {
  std::string& bytes = out.bytes();
  bytes.clear();  // keeps the capacity: no fresh pages for a message like the last one
  output_lease lease;
  std::ostream& stream = lease.open(&bytes, 0, direct, threshold);
  try {
    codec.write(stream, value);
  } catch (const error&) {
    throw;
  } catch (const std::exception& e) {
    throw serialization_error(serialization_error::phase::encode_message, e.what());
  }
  if (!stream) {
    throw serialization_error(serialization_error::phase::encode_message, "stream failure");
  }
  out.length = bytes.size();
}

void decode_value(const char* data, std::size_t size, const message_codec& codec, void* value,
                  const char* then, std::size_t then_size) {
  try {
    codec.read(split_input(data, size, then, then_size), value);
  } catch (const error&) {
    throw;
  } catch (const std::exception& e) {
    throw serialization_error(serialization_error::phase::decode_message, e.what());
  }
}

}  // namespace multiproc::detail
