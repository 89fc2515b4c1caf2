// Fuzz target: the frame reader (src/core/protocol/frame.hpp), the first code every byte from a
// peer meets, in the parent (results) and in the child (tasks, the hello). The input is
// [piece pattern][stream]: the stream goes through a real channel (os::make_channel_pair), in
// pieces the pattern chooses, and frames are read until end of stream. Oracles: the frames the
// reader returns are exactly those an independent parser finds (split_frames), in order,
// byte for byte; has_buffered_frame() never promises a frame that is not there; and (through
// scripts/fuzz.sh's -malloc_limit_mb) no claimed length makes the reader allocate what was
// never sent.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "../src/core/protocol/control.hpp"
#include "../src/core/protocol/frame.hpp"
#include "../src/core/protocol/hello.hpp"
#include "../src/core/protocol/ledger.hpp"
#include "../src/core/protocol/result.hpp"
#include "support.hpp"

namespace core = multiproc::detail;
using multiproc_fuzz::fed_channel;

namespace {

std::vector<std::string> seeds() {
  std::vector<std::string> out;
  const auto with_pattern = [&](std::uint8_t pattern, const std::string& stream) {
    out.push_back(std::string(1, static_cast<char>(pattern)) + stream);
  };
  std::string frames;
  core::append_hello(frames, "0123456789abcdef0123456789abcdef", core::child_role::pool_worker);
  core::append_ready(frames);
  core::append_stop(frames);
  core::append_release(frames, 42);
  core::append_ledger(frames, core::ledger_location{3, 4096, 64});
  core::append_skipped(frames, 9);
  {
    std::string result;
    core::result_frame frame(result, 5);
    result += "payload";
    multiproc::detail::os::shared_block none;
    std::vector<multiproc::detail::os::native_handle> attached;
    frame.finish(core::task_outcome{}, 17, none, 0, attached);
    frames += result;
  }
  with_pattern(0, frames);
  with_pattern(1, frames);
  with_pattern(23, frames);
  with_pattern(200, frames);
  // A frame larger than the reader's first buffer (64 KiB), between two small ones.
  std::string large;
  core::append_ready(large);
  const std::size_t at = core::begin_frame(large, core::frame_kind::task, 1);
  large.append(70000, 'x');
  core::end_frame(large, at);
  core::append_stop(large);
  with_pattern(0, large);
  with_pattern(130, large);
  // A torn frame at the end.
  with_pattern(5, frames + frames.substr(0, 30));
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  multiproc_fuzz::write_seeds_if_asked(seeds());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::vector<multiproc_fuzz::plain_frame> expected = multiproc_fuzz::split_frames(stream);

  fed_channel fed(stream, data[0]);
  core::frame_reader reader(fed.reader());
  std::size_t count = 0;
  core::frame_header header{};
  const char* body = nullptr;
  for (;;) {
    const bool promised = reader.has_buffered_frame();
    if (promised) MULTIPROC_FUZZ_CHECK(count < expected.size());
    try {
      if (!reader.next(header, body)) break;
    } catch (const std::bad_alloc&) {
      // Known (frame_reader_allocates_the_claimed_length_before_the_bytes_arrive): a claimed
      // length is allocated before its bytes arrive. Skipped only under skip_known("alloc"), where
      // large allocations fail instead of crashing.
      if (!multiproc_fuzz::skip_known("alloc")) throw;
      fed.stop();
      return 0;
    }
    MULTIPROC_FUZZ_CHECK(count < expected.size());
    const auto& want = expected[count];
    MULTIPROC_FUZZ_CHECK(std::memcmp(&header, &want.header, sizeof header) == 0);
    MULTIPROC_FUZZ_CHECK(header.body_size == want.body.size());
    MULTIPROC_FUZZ_CHECK(header.body_size == 0 ||
                         std::memcmp(body, want.body.data(), want.body.size()) == 0);
    ++count;
  }
  fed.stop();
  MULTIPROC_FUZZ_CHECK(count == expected.size());
  return 0;
}
