// The result family of frames: `result` (worker -> parent, the outcome of one task) and
// `release` (parent -> worker, "I have mapped the block your result is in: free yours").
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "../../os/child.hpp"
#include "../../os/shared_block.hpp"
#include "call.hpp"
#include "frame.hpp"

namespace multiproc::detail {

/// Worker side: one task's result frame, begun before the call runs so the call writes its
/// result straight after the status byte, and finished once the outcome is known.
class result_frame {
 public:
  /// Begins the frame for task `id` at the end of `out`.
  result_frame(std::string& out, std::uint64_t id);
  /// Where the call appends its encoded result.
  std::size_t result_start() const noexcept { return result_start_; }
  /// Finishes the frame. If `outcome` is not ok, the result bytes are replaced by the
  /// outcome; if the result went into `result_block`, the frame carries its token and size
  /// (the caller keeps the block until the parent's release; portable POSIX: its descriptor
  /// is added to `attached`, to be written with the frame).
  void finish(const task_outcome& outcome, std::uint32_t elapsed_us, os::shared_block& result_block,
              std::size_t result_block_size, std::vector<os::native_handle>& attached);

 private:
  std::string& out_;
  std::size_t at_;
  std::size_t status_at_;
  std::size_t result_start_;
};

/// Parent side: a decoded result, or the error that stands for it.
struct result_payload {
  std::string bytes;       ///< the encoded result, when it came inline
  os::shared_block block;  ///< the block it came in, mapped, when it was large
  std::size_t block_size = 0;
  std::exception_ptr error;  ///< remote_error, or serialization_error naming the phase
};
/// Decodes a result frame from `sender`, read from `from`. A result in a block is mapped
/// (portable POSIX: the block's descriptor is the next that arrived on `from`) and a release
/// frame for it appended to `releases` (to send back). Never throws for what the frame says:
/// failures become `error`.
result_payload read_result(const frame_header& header, const char* body, const os::child& sender,
                           os::channel& from, std::string& releases);

/// Appends a release frame for the result block of task `id`.
void append_release(std::string& out, std::uint64_t id);

/// Appends a non-ok outcome: status, type name, message.
void append_outcome(std::string& out, const task_outcome& outcome);
/// Reads what append_outcome wrote. Throws std::runtime_error if it is malformed.
task_outcome read_outcome(body_reader& reader);

}  // namespace multiproc::detail
