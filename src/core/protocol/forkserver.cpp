// The fork server's set-up frame (see forkserver.hpp).
#include "forkserver.hpp"

#include <stdexcept>

namespace multiproc::detail {

void append_forkserver_setup(std::string& out,
                             const std::vector<std::shared_ptr<const encoded_call>>& preload,
                             os::native_handle link, const os::child& receiver,
                             std::vector<os::native_handle>& attached) {
  const std::uint64_t token = os::pass_handle(link, receiver, attached);
  const std::size_t at = begin_frame(out, frame_kind::forkserver_setup, 0);
  append_u64(out, preload.size());
  for (const auto& call : preload)
    append_string(out, call->bytes);
  append_u64(out, token);
  set_frame_handles(out, at, 1);
  end_frame(out, at);
}

std::vector<std::string_view> read_forkserver_setup(const frame_header& header, const char* body) {
  if (header.kind != frame_kind::forkserver_setup) {
    throw std::runtime_error("multiproc: a fork server expected its set-up frame");
  }
  body_reader reader(body, header.body_size);
  const std::uint64_t count = reader.u64();
  std::vector<std::string_view> calls;
  for (std::uint64_t i = 0; i < count; ++i)
    calls.push_back(reader.string());
  if (reader.remaining() != 0) throw std::runtime_error("multiproc: malformed set-up frame");
  return calls;
}

}  // namespace multiproc::detail
