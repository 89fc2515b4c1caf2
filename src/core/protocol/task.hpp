// The call family of frames, parent -> child: `task` (a pool task, answered by a result),
// `initializer` (a pool worker's set-up, answered by ready or initializer_failed) and
// `run_once` (an mp::process's call). Each carries a call body (call.hpp), inline or, when
// large, as the token of a shared block the child maps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "../../os/child.hpp"
#include "../../os/shared_block.hpp"
#include "frame.hpp"

namespace multiproc::detail {

/// Parent side: appends a task frame whose body is `body`, or, if `block` holds it, the
/// block's token exported to `receiver` and `block_size`; then the `handles` its arguments
/// carry (on POSIX added to `attached`, for the write). Throws std::system_error if the block
/// or a handle cannot be passed to the receiver (nothing is appended then).
void append_task(std::string& out, std::uint64_t id, const std::string& body,
                 os::shared_block& block, std::size_t block_size, const handle_list& handles,
                 const os::child& receiver, std::vector<os::native_handle>& attached);
/// Bytes a task frame takes in the channel: the header and the inline body or the token.
std::size_t task_wire_size(std::size_t inline_body_size, bool in_block) noexcept;

/// Worker side: a task's call body, and the block it lies in when it came in one.
struct task_body {
  const char* data = nullptr;
  std::size_t size = 0;
  os::shared_block block;
};
/// Reads a task frame's body, mapping its block if it has one (portable POSIX: the block's
/// descriptor is the next that arrived on `from`, after the frame's handles). Throws
/// std::system_error if the block cannot be mapped, std::runtime_error if the frame is
/// malformed.
task_body read_task(const frame_header& header, const char* body, os::channel& from);
/// Worker side, for a task frame it will not run: gives up the block it carries (the token,
/// or the descriptor that came on `from`).
void forget_task(const frame_header& header, const char* body, os::channel& from) noexcept;

struct encoded_call;
/// Appends the initializer frame a pool worker gets first: `call`, or an empty body for "no
/// initializer" (the frame is sent anyway: the worker says ready only after it). Throws as
/// append_task.
void append_initializer(std::string& out, const encoded_call* call, const os::child& receiver,
                        std::vector<os::native_handle>& attached);

/// Appends the head of a run_once frame whose body is `call`'s bytes, then `trailer` (its
/// handles' tokens, handle_trailer()): the caller writes those two right after the head, so
/// a large call is never copied behind it.
void append_run_once_head(std::string& out, const encoded_call& call, const std::string& trailer);

}  // namespace multiproc::detail
