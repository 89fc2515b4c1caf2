// Call bodies: what a task, an initializer or an mp::process carries -- which invoker, which
// function (each as module + offset), and the encoded arguments -- and running one in the
// child, with the checks DESIGN.md's function identity asks for. The frames that carry a
// call are in task.hpp; the frame that carries its outcome back is in result.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <multiproc/detail/call.hpp>

#include <memory>
#include <vector>

#include "../../os/shared_block.hpp"
#include "../../os/sync.hpp"
#include "frame.hpp"

namespace multiproc::detail {

/// Something a travelling object leaves with a call besides its handles: it lives as long as
/// the call (the encoded call, or the pool task), and hears where the call goes. A queue uses
/// it to count the call's receiver as a holder before the receiver could count itself (see
/// src/core/shared/queue.cpp).
class travel_ticket {
 public:
  virtual ~travel_ticket() = default;
  /// The call reached `receiver` (a started mp::process, or the worker a task was sent to).
  virtual void delivered_to(const os::process_stamp& receiver) = 0;
  /// The receiver will not open it after all (a task taken back, or whose worker died): the
  /// call waits again.
  virtual void returned() = 0;
};
using ticket_list = std::vector<std::unique_ptr<travel_ticket>>;

/// A call encoded to run later (a process's target, a pool's initializer): its bytes, the
/// handles its arguments carry (copies this encoding owns), and their tickets.
struct encoded_call {
  std::string bytes;
  handle_list handles;
  ticket_list tickets;
};

/// Appends the code references and arguments of `call` to `out`. If `allow_block` and the
/// body grows past spill_threshold, moves it (from `body_start` on) into `block` instead and
/// leaves `out` cut back to `body_start`. The handles the arguments carry (queues, pipes,
/// shared objects: travel_out()) are copied into `handles`; with `handles` null, such an
/// argument is refused. Throws serialization_error.
void encode_call_body(const call_spec& call, std::string& out, std::size_t body_start,
                      bool allow_block, os::shared_block& block, std::size_t& block_size,
                      handle_list* handles, ticket_list* tickets = nullptr);

/// While a call's arguments are encoded: a travelling object's handle joins the call (as a
/// copy); returns the index its bytes name it by. Throws serialization_error when nothing is
/// being encoded for another process (the object was put in a queue or pipe, or returned as a
/// task's result).
std::uint32_t travel_out(os::native_handle handle);
/// While a call's arguments are encoded: leaves `ticket` with the call. Throws
/// serialization_error when nothing is being encoded for another process.
void travel_ticket_out(std::unique_ptr<travel_ticket> ticket);
/// While a call's arguments are decoded: takes the handle they name as `index`. Throws
/// serialization_error if there is none.
os::owned_handle travel_in(std::uint32_t index);

/// How running a call went; travels back in a result frame.
enum class result_status : std::uint8_t {
  ok = 0,
  raised = 1,         ///< the target threw: type, what
  bad_arguments = 2,  ///< decoding the arguments failed (or the call was refused): message
  bad_result = 3,     ///< encoding the result failed: message
};

/// What running a call gave.
struct task_outcome {
  result_status status = result_status::ok;
  std::string type_name;  ///< raised: the exception's type
  std::string message;    ///< raised: its what(); bad_*: what failed
};

/// Runs a call body in this process, after checking that its invoker is one this program
/// registered and that its target lies in executable code (else bad_arguments). The result
/// (if `result_out`) is appended to it, or to `result_block` once it grows past
/// spill_threshold (if `allow_block`). Exceptions the target throws are caught and described
/// in the outcome; exit()/abort() in the target end the process as they would anywhere.
/// `consumed_arguments`: the shared block `body` lies in, read by nobody after this call;
/// its memory is given back as the arguments are decoded, so a huge argument is not held
/// twice (mapped and decoded) while the target runs.
/// `handles`: those the frame carried, which the arguments name (travel_in()); those left
/// untaken are closed by the caller.
task_outcome run_call_body(const char* body, std::size_t size, std::string* result_out,
                           std::size_t result_start, bool allow_block,
                           os::shared_block* result_block, std::size_t* result_block_size,
                           handle_list* handles, os::shared_block* consumed_arguments = nullptr);

}  // namespace multiproc::detail
