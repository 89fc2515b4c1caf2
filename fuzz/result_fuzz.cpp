// Fuzz target: the result decoder (src/core/protocol/result.hpp read_result), what the parent
// does with every result frame a worker sends, followed by what async_result::get() does with
// the payload (read_value / read_chunk over memory_input, as result_state.cpp's state_decode).
//
// The input is [header flags][decoder][body]. A result that claims a shared block (flag
// body_in_block) is opened with os::shared_block::open_from_child, whose sender is this fuzz
// process itself (an os::child with this pid): this binary holds one real block (a memfd
// holding an encoded std::vector<double>) whose token the seeds use, so a result may name
// it, name it with the wrong size, or name any other descriptor of this process.
//
// The real block's token is a descriptor number, which may differ between runs: a token
// 0xfefefefefefefefe in the input stands for it (the seeds use it), any other is used as is.
//
// Oracles: read_result never throws; an error it returns is mp::remote_error or
// mp::serialization_error; a result in a block is released (one release frame for its id);
// decoding the payload fails only with an exception, never a signal (a block claimed larger
// than it is must give serialization_error, not SIGBUS: issue 9 item 4); and (through
// scripts/fuzz.sh's -malloc_limit_mb) no claimed count makes the parent allocate what was
// never sent.
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <multiproc/async_result.hpp>
#include <multiproc/errors.hpp>

#include "../src/core/protocol/codec.hpp"
#include "../src/core/protocol/frame.hpp"
#include "../src/core/protocol/result.hpp"
#include "../src/os/child.hpp"
#include "../src/os/shared_block.hpp"
#include "support.hpp"

namespace mp = multiproc;
namespace core = multiproc::detail;
namespace os = multiproc::detail::os;

namespace {

constexpr std::size_t block_bytes = 8192;
constexpr std::uint64_t symbolic_token = 0xfefefefefefefefe;

/// The one real result block of this process. Its bytes are what a lying worker would put
/// there: a size tag claiming 1 MiB, then filler to the block's end -- so a decoder reads on to
/// the end of whatever size the frame claims for the block.
os::shared_block& real_block() {
  static os::shared_block block = [] {
    std::string bytes(block_bytes, 'x');
    const std::uint64_t claimed = std::uint64_t{1} << 20;
    std::memcpy(bytes.data(), &claimed, sizeof claimed);
    os::shared_block b = os::shared_block::create(block_bytes);
    b.write(0, bytes.data(), bytes.size());
    return b;
  }();
  return block;
}

const os::child& this_process() {
  static const os::child self(static_cast<long>(::getpid()), os::invalid_handle);
  return self;
}

/// The decoders async_result::get() uses, for the result types a pool task may have.
template <class R>
void decode_value(std::istream& in) {
  R value{};
  core::read_value<R>(in, &value);
}
template <class R>
void decode_chunk(std::istream& in) {
  std::vector<R> values;
  core::read_chunk<R>(in, &values);
}
void decode(std::uint8_t which, std::istream& in) {
  switch (which % 7) {
    case 0:
      return decode_value<int>(in);
    case 1:
      return decode_value<std::string>(in);
    case 2:
      return decode_value<std::vector<double>>(in);
    case 3:
      return decode_value<std::map<int, std::string>>(in);
    case 4:
      return decode_chunk<int>(in);
    case 5:
      return decode_chunk<std::string>(in);
    default:
      return decode_chunk<std::vector<int>>(in);
  }
}

template <class R>
std::string encoded_value(const R& value) {
  std::ostringstream out;
  cereal::BinaryOutputArchive archive(out);
  archive(value);
  return out.str();
}

/// A result frame's body and flags as the worker writes them (result_frame).
std::string seed(std::uint8_t which, const core::task_outcome& outcome, const std::string& bytes,
                 bool in_block = false) {
  std::string frame;
  core::result_frame result(frame, 3);
  frame += bytes;
  os::shared_block none;
  if (in_block) {
    // The worker's finish() with a block: the token and the size after the status byte.
    frame.resize(result.result_start());
    core::append_u64(frame, symbolic_token);
    core::append_u64(frame, block_bytes);
    core::set_frame_flags(frame, 0, core::body_in_block);
    core::end_frame(frame, 0);
  } else {
    std::vector<os::native_handle> attached;
    result.finish(outcome, 5, none, 0, attached);
  }
  core::frame_header header;
  std::memcpy(&header, frame.data(), sizeof header);
  return std::string(1, static_cast<char>(header.flags)) +
         std::string(1, static_cast<char>(which)) + frame.substr(sizeof header);
}

std::vector<std::string> seeds() {
  const core::task_outcome ok;
  std::vector<std::string> out;
  out.push_back(seed(0, ok, encoded_value(42)));
  out.push_back(seed(1, ok, encoded_value(std::string("forty-two"))));
  out.push_back(seed(2, ok, encoded_value(std::vector<double>{1, 2})));
  out.push_back(seed(3, ok, encoded_value(std::map<int, std::string>{{1, "a"}, {2, "b"}})));
  out.push_back(seed(4, ok, encoded_value(std::vector<int>{1, 2, 3})));
  out.push_back(seed(5, ok, encoded_value(std::vector<std::string>{"x", "yz"})));
  out.push_back(seed(6, ok, encoded_value(std::vector<std::vector<int>>{{1}, {2, 3}})));
  out.push_back(seed(1, ok, "", true));
  out.push_back(seed(2, ok, "", true));
  out.push_back(seed(0, {core::result_status::raised, "std::runtime_error", "boom"}, ""));
  out.push_back(seed(0, {core::result_status::bad_arguments, "", "could not decode"}, ""));
  out.push_back(seed(0, {core::result_status::bad_result, "", "could not encode"}, ""));
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)real_block();
  (void)this_process();
  multiproc_fuzz::write_seeds_if_asked(seeds());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  core::frame_header header{};
  header.kind = core::frame_kind::result;
  header.flags = data[0];
  header.id = 77;
  header.body_size = static_cast<std::uint32_t>(size - 2);
  // The body in an allocation of exactly its size (ASan sees any read past its end), with the
  // symbolic token replaced.
  const std::unique_ptr<char[]> exact(new char[size - 2]);
  std::memcpy(exact.get(), data + 2, size - 2);
  char* const body = exact.get();
  if (size - 2 >= 9) {
    std::uint64_t token = 0;
    std::memcpy(&token, body + 1, 8);
    if (token == symbolic_token) {
      std::vector<os::native_handle> attached;  // stays empty on Linux
      token = static_cast<std::uint64_t>(real_block().export_to_parent(attached));
      std::memcpy(body + 1, &token, 8);
    }
  }

  const bool claims_block = (header.flags & core::body_in_block) != 0 && header.body_size >= 17 &&
                            data[2] == static_cast<std::uint8_t>(core::result_status::ok);
  if (claims_block && multiproc_fuzz::skip_known("block")) {
    // Known (result_claiming_a_block_larger_than_it_is_fails_to_decode_without_a_signal): a
    // block is mapped at the size the frame claims, and reading past the real end is SIGBUS.
    std::uint64_t token = 0, claimed = 0;
    std::memcpy(&token, body + 1, 8);
    std::memcpy(&claimed, body + 9, 8);
    struct stat info {};
    if (token <= 1u << 20 && ::fstat(static_cast<int>(token), &info) == 0 &&
        claimed > static_cast<std::uint64_t>(info.st_size)) {
      return 0;
    }
  }

  std::string releases;
  os::channel none;  // Linux: the token names the worker's descriptor, none travels
  core::result_payload payload = core::read_result(header, body, this_process(), none, releases);

  if (claims_block) {
    const auto frames = multiproc_fuzz::split_frames(releases);
    MULTIPROC_FUZZ_CHECK(frames.size() == 1);
    MULTIPROC_FUZZ_CHECK(frames[0].header.kind == core::frame_kind::release);
    MULTIPROC_FUZZ_CHECK(frames[0].header.id == header.id);
    MULTIPROC_FUZZ_CHECK(frames[0].body.empty());
  } else {
    MULTIPROC_FUZZ_CHECK(releases.empty());
  }

  if (payload.error) {
    try {
      std::rethrow_exception(payload.error);
    } catch (const mp::remote_error&) {
    } catch (const mp::serialization_error&) {
    }
    return 0;
  }
  // What state_decode does.
  const char* bytes = payload.block ? payload.block.data() : payload.bytes.data();
  const std::size_t count = payload.block ? payload.block_size : payload.bytes.size();
  try {
    decode(data[1], core::memory_input(bytes, count));
  } catch (const std::exception&) {
    // state_decode turns this into serialization_error(decode_result)
  }
  return 0;
}
