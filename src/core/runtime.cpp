// Frames, codecs and task running: the portable heart shared by process, pool and worker.
#include "runtime.hpp"

#include <multiproc/pool.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <istream>
#include <mutex>
#include <ostream>
#include <streambuf>
#include <typeinfo>
#include <unordered_set>

#if __has_include(<cxxabi.h>)
#include <cxxabi.h>
#define MULTIPROC_HAVE_CXXABI 1
#endif

namespace multiproc::detail {

// ---- invoker registry ---------------------------------------------------------------------------

namespace {
struct invoker_registry {
  std::mutex mutex;
  std::unordered_set<const void*> known;
};
invoker_registry& registry() {
  // Function-local: registrations run during static initialisation, in any order.
  static invoker_registry instance;
  return instance;
}
bool is_registered_invoker(const void* address) {
  thread_local const void* last_seen = nullptr;  // workers run the same invoker many times
  if (address == last_seen) return true;
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (r.known.count(address) == 0) return false;
  last_seen = address;
  return true;
}
}  // namespace

bool register_invoker(invoker_fn invoker) noexcept {
  try {
    auto& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    r.known.insert(reinterpret_cast<const void*>(invoker));
    return true;
  } catch (...) {
    return false;
  }
}

// ---- frames -------------------------------------------------------------------------------------

std::size_t begin_frame(std::string& out, frame_kind kind, std::uint64_t id, std::uint8_t flags,
                        std::uint32_t elapsed_us) {
  frame_header header{};
  header.kind = kind;
  header.flags = flags;
  header.elapsed_us = elapsed_us;
  header.id = id;
  const std::size_t at = out.size();
  out.append(reinterpret_cast<const char*>(&header), sizeof header);
  return at;
}

void check_frame_size(std::size_t size) {
  if (size > max_frame_body) {
    throw serialization_error(serialization_error::phase::encode_arguments,
                              "the encoded call takes " + std::to_string(size) +
                                  " bytes, more than the 2 GiB a message may carry");
  }
}

void end_frame(std::string& out, std::size_t at, std::size_t more) {
  const std::size_t body = out.size() - at - sizeof(frame_header) + more;
  check_frame_size(body);
  const auto size = static_cast<std::uint32_t>(body);
  std::memcpy(out.data() + at + offsetof(frame_header, body_size), &size, sizeof size);
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
  std::memcpy(&header, buffer_.data() + begin_, sizeof header);
  return end_ - begin_ >= sizeof header + header.body_size;
}

bool frame_reader::next(frame_header& header, const char*& body) {
  for (;;) {
    if (end_ - begin_ >= sizeof(frame_header)) {
      std::memcpy(&header, buffer_.data() + begin_, sizeof header);
      if (header.body_size > max_frame_body) return false;  // not a frame of ours: stop here
      const std::size_t whole = sizeof header + header.body_size;
      if (end_ - begin_ >= whole) {
        body = buffer_.data() + begin_ + sizeof header;
        begin_ += whole;
        return true;
      }
      if (whole > buffer_.size()) {
        // Make room for a large frame: move what we have to the front of a bigger buffer.
        std::vector<char> bigger(whole);
        std::memcpy(bigger.data(), buffer_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
        buffer_.swap(bigger);
      }
    }
    if (begin_ == end_) {
      begin_ = end_ = 0;
    } else if (buffer_.size() - end_ < 4096 && begin_ > 0) {
      std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    const std::size_t got = channel_.read_some(buffer_.data() + end_, buffer_.size() - end_);
    if (got == 0) return false;
    end_ += got;
  }
}

// ---- streams ------------------------------------------------------------------------------------

namespace {

/// Writes into a std::string; past spill_threshold (when allowed) moves everything into a
/// shared block and goes on there, so a huge payload is written once, straight into memory
/// the other process maps.
class spill_buffer final : public std::streambuf {
 public:
  void reset(std::string* out, std::size_t start, bool allow_block, os::shared_block* block,
             std::size_t* block_size) {
    out_ = out;
    start_ = start;
    allow_ = allow_block && block != nullptr && os::shared_block::supported();
    block_ = block;
    block_size_ = block_size;
    used_ = 0;
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
      if (!allow_ || out_->size() - start_ + n <= spill_threshold) {
        out_->append(data, n);
        return count;
      }
      spill(n);
    }
    if (used_ + n > block_->size()) block_->grow(std::max(used_ + n, block_->size() * 2));
    block_->write(used_, data, n);
    used_ += n;
    *block_size_ = used_;
    return count;
  }

 private:
  void spill(std::size_t incoming) {
    const std::size_t have = out_->size() - start_;
    *block_ = os::shared_block::create(std::max(have + incoming, 2 * spill_threshold));
    block_->write(0, out_->data() + start_, have);
    used_ = have;
    *block_size_ = used_;
    out_->resize(start_);
    spilled_ = true;
  }

  std::string* out_ = nullptr;
  std::size_t start_ = 0;
  bool allow_ = false;
  os::shared_block* block_ = nullptr;
  std::size_t* block_size_ = nullptr;
  std::size_t used_ = 0;
  bool spilled_ = false;
};

class memory_buffer final : public std::streambuf {
 public:
  void reset(const char* data, std::size_t size, os::shared_block* consumed) {
    begin_ = const_cast<char*>(data);  // read-only use: no put area is ever set
    end_ = begin_ + size;
    consumed_ = consumed;
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
  char* begin_ = nullptr;
  char* end_ = nullptr;
  os::shared_block* consumed_ = nullptr;
};

// Streams are costly to construct (locale set-up); each thread keeps one of each and
// re-points it per use. A nested use (a serialize() that itself submits work) gets its own.
struct output_slot {
  spill_buffer buffer;
  std::ostream stream{&buffer};
  bool busy = false;
};
struct input_slot {
  memory_buffer buffer;
  std::istream stream{&buffer};
};
#if defined(MULTIPROC_DETAIL_THREAD_LOCAL_DESTRUCTORS_BROKEN)
// Never destroyed: one small allocation per thread that used the library.
output_slot& thread_output() {
  thread_local output_slot* slot = new output_slot;
  return *slot;
}
input_slot& thread_input() {
  thread_local input_slot* slot = new input_slot;
  return *slot;
}
#else
output_slot& thread_output() {
  thread_local output_slot slot;
  return slot;
}
input_slot& thread_input() {
  thread_local input_slot slot;
  return slot;
}
#endif

class output_lease {
 public:
  output_lease() {
    if (!thread_output().busy) {
      slot_ = &thread_output();
    } else {
      own_ = std::make_unique<output_slot>();
      slot_ = own_.get();
    }
    slot_->busy = true;
    slot_->stream.clear();
  }
  ~output_lease() { slot_->busy = false; }
  output_slot& operator*() { return *slot_; }
  output_slot* operator->() { return slot_; }

 private:
  output_slot* slot_;
  std::unique_ptr<output_slot> own_;
};

void append_code(std::string& out, const void* address) {
  os::code_location where;
  if (!os::locate_code(address, where)) {
    throw serialization_error(serialization_error::phase::encode_arguments,
                              "the target's code lies in no loaded module");
  }
  append_string(out, where.module);
  append_u64(out, where.offset);
}

}  // namespace

std::istream& memory_input(const char* data, std::size_t size, os::shared_block* consumed) {
  input_slot& slot = thread_input();
  slot.buffer.reset(data, size, consumed);
  slot.stream.clear();
  return slot.stream;
}

void encode_call_body(const call_spec& call, std::string& out, std::size_t body_start,
                      bool allow_block, os::shared_block& block, std::size_t& block_size) {
  append_code(out, reinterpret_cast<const void*>(call.invoker));
  append_code(out, reinterpret_cast<const void*>(call.target));
  output_lease lease;
  lease->buffer.reset(&out, body_start, allow_block, &block, &block_size);
  try {
    call.write_arguments(lease->stream, call.arguments);
  } catch (const error&) {
    throw;
  } catch (const std::exception& e) {
    out.resize(std::min(out.size(), body_start));
    block = os::shared_block();
    throw serialization_error(serialization_error::phase::encode_arguments, e.what());
  }
  if (!lease->stream) {
    throw serialization_error(serialization_error::phase::encode_arguments, "stream failure");
  }
}

std::string encode_call(const call_spec& call) {
  std::string out;
  os::shared_block unused;
  std::size_t unused_size = 0;
  encode_call_body(call, out, 0, false, unused, unused_size);
  return out;
}

// ---- running calls ------------------------------------------------------------------------------

std::string current_exception_type() {
#if defined(MULTIPROC_HAVE_CXXABI)
  const std::type_info* type = abi::__cxa_current_exception_type();
  if (type == nullptr) return "unknown";
  int status = 0;
  char* readable = abi::__cxa_demangle(type->name(), nullptr, nullptr, &status);
  std::string name = (status == 0 && readable != nullptr) ? readable : type->name();
  std::free(readable);
  return name;
#else
  try {
    throw;
  } catch (const std::exception& e) {
    std::string name = typeid(e).name();  // MSVC: "class std::runtime_error"
    for (const char* prefix : {"class ", "struct "}) {
      if (name.rfind(prefix, 0) == 0) name.erase(0, std::strlen(prefix));
    }
    return name;
  } catch (...) {
    return "unknown (not a std::exception)";
  }
#endif
}

std::string current_exception_message() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return std::string();
  }
}

task_outcome run_call_body(const char* body, std::size_t size, std::string* result_out,
                           std::size_t result_start, bool allow_block,
                           os::shared_block* result_block, std::size_t* result_block_size,
                           os::shared_block* consumed_arguments) {
  task_outcome outcome;
  invoker_fn invoker = nullptr;
  raw_function target = nullptr;
  body_reader reader(body, size);
  try {
    const std::string_view invoker_module = reader.string();
    const std::uint64_t invoker_offset = reader.u64();
    const std::string_view target_module = reader.string();
    const std::uint64_t target_offset = reader.u64();
    const void* invoker_address = os::resolve_code(invoker_module, invoker_offset);
    if (invoker_address == nullptr || !is_registered_invoker(invoker_address)) {
      throw std::runtime_error(
          "refused the call: its invoker is not one this program instantiated");
    }
    const void* target_address = os::resolve_code(target_module, target_offset);
    if (target_address == nullptr) {
      throw std::runtime_error("refused the call: its target is not in an executable mapping of " +
                               std::string(target_module.empty() ? "the program" : target_module));
    }
    invoker = reinterpret_cast<invoker_fn>(const_cast<void*>(invoker_address));
    target = reinterpret_cast<raw_function>(const_cast<void*>(target_address));
  } catch (const std::exception& e) {
    outcome.status = result_status::bad_arguments;
    outcome.message = e.what();
    return outcome;
  }
  std::istream& arguments = memory_input(reader.position(), reader.remaining(), consumed_arguments);
  output_lease lease;
  if (result_out != nullptr) {
    lease->buffer.reset(result_out, result_start, allow_block, result_block, result_block_size);
  }
  try {
    invoker(target, arguments, result_out != nullptr ? &lease->stream : nullptr);
    return outcome;
  } catch (const codec_failure& failure) {
    outcome.status =
        failure.while_decoding ? result_status::bad_arguments : result_status::bad_result;
    outcome.message = failure.message;
  } catch (...) {
    outcome.status = result_status::raised;
    outcome.type_name = current_exception_type();
    outcome.message = current_exception_message();
  }
  if (result_out != nullptr) result_out->resize(std::min(result_out->size(), result_start));
  if (result_block != nullptr) *result_block = os::shared_block();
  return outcome;
}

}  // namespace multiproc::detail
