// Fuzz target: the small frames whose bodies a peer writes -- the ledger frame a worker reads
// before it maps its claim word (src/core/protocol/ledger.hpp read_ledger), the
// initializer_failed frame the parent reads (control.hpp read_initializer_failed), and the
// block reference of a task a worker will not run (task.hpp forget_task).
//
// The input is [which][flags][body]. Oracles: read_ledger accepts only a word that lies wholly
// inside the block it names, at a multiple of ledger_stride (the worker then writes there:
// anything else is a write outside the mapping), else it throws std::runtime_error;
// read_initializer_failed never throws and always gives an mp::state_error that names the
// worker; forget_task never throws.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <multiproc/errors.hpp>

#include "../src/core/protocol/control.hpp"
#include "../src/core/protocol/frame.hpp"
#include "../src/core/protocol/ledger.hpp"
#include "../src/core/protocol/result.hpp"
#include "../src/core/protocol/task.hpp"
#include "support.hpp"

namespace mp = multiproc;
namespace core = multiproc::detail;

namespace {

std::string body_of(const std::string& frame) {
  return frame.substr(sizeof(core::frame_header));
}

std::vector<std::string> seeds() {
  std::vector<std::string> out;
  std::string ledger;
  core::append_ledger(ledger, core::ledger_location{5, 4096, 128});
  out.push_back(std::string("\0\0", 2) + body_of(ledger));
  std::string failed;
  core::append_initializer_failed(failed,
                                  {core::result_status::raised, "std::logic_error", "no config"});
  out.push_back(std::string("\1\0", 2) + body_of(failed));
  std::string task_in_block;
  core::append_u64(task_in_block, 9);
  core::append_u64(task_in_block, 1 << 20);
  out.push_back(std::string("\2\1", 2) + task_in_block);
  return out;
}

constexpr long worker_pid = 4242;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  multiproc_fuzz::write_seeds_if_asked(seeds());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  core::frame_header header{};
  header.flags = data[1];
  header.body_size = static_cast<std::uint32_t>(size - 2);
  const char* body = reinterpret_cast<const char*>(data) + 2;
  switch (data[0] % 3) {
    case 0: {
      header.kind = core::frame_kind::ledger;
      if (multiproc_fuzz::skip_known("ledger") && header.body_size >= 24) {
        // Known (ledger_word_past_the_end_of_its_block_is_refused): offset + ledger_stride
        // wraps around for an offset near 2^64, and the check passes.
        std::uint64_t offset = 0;
        std::memcpy(&offset, body + 16, 8);
        if (offset > ~std::uint64_t{0} - core::ledger_stride) return 0;
      }
      try {
        const core::ledger_location where = core::read_ledger(header, body);
        // The worker maps `size` bytes and writes the word at `offset`: it must lie inside.
        MULTIPROC_FUZZ_CHECK(where.size >= core::ledger_stride);
        MULTIPROC_FUZZ_CHECK(where.offset <= where.size - core::ledger_stride);
        MULTIPROC_FUZZ_CHECK(where.offset % core::ledger_stride == 0);
      } catch (const std::runtime_error&) {
      }
      break;
    }
    case 1: {
      header.kind = core::frame_kind::initializer_failed;
      const std::exception_ptr error = core::read_initializer_failed(header, body, worker_pid);
      MULTIPROC_FUZZ_CHECK(error != nullptr);
      try {
        std::rethrow_exception(error);
      } catch (const mp::state_error& e) {
        MULTIPROC_FUZZ_CHECK(std::string(e.what()).find(std::to_string(worker_pid)) !=
                             std::string::npos);
      }
      break;
    }
    default:
      header.kind = core::frame_kind::task;
      multiproc::detail::os::channel none;  // Linux: the token names the parent's descriptor
      core::forget_task(header, body, none);
      break;
  }
  return 0;
}
