// The result family of frames (see result.hpp).
#include "result.hpp"

#include <multiproc/errors.hpp>

namespace multiproc::detail {

result_frame::result_frame(std::string& out, std::uint64_t id)
    : out_(out), at_(begin_frame(out, frame_kind::result, id)), status_at_(out.size()) {
  out.push_back(static_cast<char>(result_status::ok));
  result_start_ = out.size();
}

void result_frame::finish(const task_outcome& outcome, std::uint32_t elapsed_us,
                          os::shared_block& result_block, std::size_t result_block_size,
                          std::vector<os::native_handle>& attached) {
  set_frame_elapsed(out_, at_, elapsed_us);
  if (outcome.status != result_status::ok) {
    out_.resize(status_at_);
    append_outcome(out_, outcome);
  } else if (result_block) {
    out_.resize(result_start_);
    append_u64(out_, result_block.export_to_parent(attached));
    append_u64(out_, result_block_size);
    set_frame_flags(out_, at_, body_in_block);
  }
  end_frame(out_, at_);
}

void append_outcome(std::string& out, const task_outcome& outcome) {
  out.push_back(static_cast<char>(outcome.status));
  append_string(out, outcome.type_name);
  append_string(out, outcome.message);
}

task_outcome read_outcome(body_reader& reader) {
  task_outcome outcome;
  outcome.status = static_cast<result_status>(reader.u8());
  outcome.type_name = std::string(reader.string());
  outcome.message = std::string(reader.string());
  return outcome;
}

result_payload read_result(const frame_header& header, const char* body, const os::child& sender,
                           os::channel& from, std::string& releases) {
  result_payload result;
  try {
    body_reader reader(body, header.body_size);
    task_outcome outcome;
    outcome.status = static_cast<result_status>(reader.u8());
    if (outcome.status == result_status::ok) {
      if (header.flags & body_in_block) {
        const std::uint64_t token = reader.u64();
        result.block_size = static_cast<std::size_t>(reader.u64());
        try {
          result.block = os::shared_block::open_from_child(sender, token, result.block_size, from);
        } catch (const std::exception& e) {
          result.error = std::make_exception_ptr(serialization_error(
              serialization_error::phase::decode_result,
              std::string("could not map the result's shared block: ") + e.what()));
        }
        // Released even if it could not be mapped: the worker must not hold it forever.
        append_release(releases, header.id);
      } else {
        result.bytes.assign(reader.position(), reader.remaining());
      }
      return result;
    }
    outcome.type_name = std::string(reader.string());
    outcome.message = std::string(reader.string());
    if (outcome.status == result_status::raised) {
      result.error =
          std::make_exception_ptr(remote_error(outcome.type_name, outcome.message, sender.pid()));
    } else {
      result.error = std::make_exception_ptr(
          serialization_error(outcome.status == result_status::bad_arguments
                                  ? serialization_error::phase::decode_arguments
                                  : serialization_error::phase::encode_result,
                              outcome.message));
    }
  } catch (const std::exception& e) {
    result.error = std::make_exception_ptr(serialization_error(
        serialization_error::phase::decode_result, std::string("malformed result: ") + e.what()));
  }
  return result;
}

void append_release(std::string& out, std::uint64_t id) {
  end_frame(out, begin_frame(out, frame_kind::release, id));
}

}  // namespace multiproc::detail
