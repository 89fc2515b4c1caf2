// The call family of frames (see task.hpp).
#include "task.hpp"

#include <cstring>

#include "call.hpp"

namespace multiproc::detail {

namespace {
/// A body in a block travels as {u64 token, u64 size}.
constexpr std::size_t block_reference_size = 16;
}  // namespace

void append_task(std::string& out, std::uint64_t id, const std::string& body,
                 os::shared_block& block, std::size_t block_size, const handle_list& handles,
                 const os::child& receiver, std::vector<os::native_handle>& attached) {
  // Everything that can fail first: nothing is appended unless all of it can be. The block
  // goes after the handles: where descriptors travel (portable POSIX), the worker takes the
  // frame's handles first (take_handles), then its block (read_task).
  const std::size_t attached_before = attached.size();
  std::string trailer;
  std::uint64_t token = 0;
  try {
    trailer = handle_trailer(handles, receiver, attached);
    if (block) token = block.export_to_child(receiver, attached);
  } catch (...) {
    attached.resize(attached_before);
    throw;
  }
  const std::size_t at = begin_frame(out, frame_kind::task, id, block ? body_in_block : 0);
  if (block) {
    append_u64(out, token);
    append_u64(out, block_size);
  } else {
    out += body;
  }
  out += trailer;
  set_frame_handles(out, at, handles.size());
  end_frame(out, at);
}

std::size_t task_wire_size(std::size_t inline_body_size, bool in_block) noexcept {
  return sizeof(frame_header) + (in_block ? block_reference_size : inline_body_size);
}

task_body read_task(const frame_header& header, const char* body, os::channel& from) {
  task_body task;
  if ((header.flags & body_in_block) == 0) {
    task.data = body;
    task.size = header.body_size;
    return task;
  }
  std::uint64_t token = 0;
  try {
    body_reader reader(body, header.body_size);
    token = reader.u64();
    task.size = static_cast<std::size_t>(reader.u64());
  } catch (...) {
    os::shared_block::forget_from_parent(token, from);  // what came for it goes all the same
    throw;
  }
  task.block = os::shared_block::open_from_parent(token, task.size, from);
  task.data = task.block.data();
  return task;
}

void forget_task(const frame_header& header, const char* body, os::channel& from) noexcept {
  if ((header.flags & body_in_block) == 0) return;
  std::uint64_t token = 0;
  if (header.body_size >= block_reference_size) std::memcpy(&token, body, sizeof token);
  os::shared_block::forget_from_parent(token, from);
}

void append_initializer(std::string& out, const encoded_call* call, const os::child& receiver,
                        std::vector<os::native_handle>& attached) {
  const std::size_t at = begin_frame(out, frame_kind::initializer, 0);
  if (call != nullptr) {
    out += call->bytes;
    append_handles(out, at, call->handles, receiver, attached);
  }
  end_frame(out, at);
}

void append_run_once_head(std::string& out, const encoded_call& call, const std::string& trailer) {
  const std::size_t at = begin_frame(out, frame_kind::run_once, 0);
  set_frame_handles(out, at, call.handles.size());
  end_frame(out, at, call.bytes.size() + trailer.size());
}

}  // namespace multiproc::detail
