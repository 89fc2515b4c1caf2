// The control frames (see control.hpp).
#include "control.hpp"

#include <multiproc/errors.hpp>

#include "../../os/system.hpp"
#include "result.hpp"

namespace multiproc::detail {

void append_ready(std::string& out) {
  end_frame(out,
            begin_frame(out, frame_kind::ready, static_cast<std::uint64_t>(os::current_pid())));
}

void append_stop(std::string& out) {
  end_frame(out, begin_frame(out, frame_kind::stop, 0));
}

void append_initializer_failed(std::string& out, const task_outcome& outcome) {
  const std::size_t at = begin_frame(out, frame_kind::initializer_failed, 0);
  append_outcome(out, outcome);
  end_frame(out, at);
}

std::exception_ptr read_initializer_failed(const frame_header& header, const char* body,
                                           long worker_pid) {
  std::string why;
  try {
    body_reader reader(body, header.body_size);
    const task_outcome outcome = read_outcome(reader);
    why = outcome.type_name + (outcome.message.empty() ? "" : ": " + outcome.message);
  } catch (const std::exception& e) {
    why = std::string("(its report was malformed: ") + e.what() + ")";
  }
  return std::make_exception_ptr(state_error("pool: the initializer failed in worker " +
                                             std::to_string(worker_pid) + ": " + why));
}

}  // namespace multiproc::detail
