// The child's side of both roles (see worker.hpp).
#include "worker.hpp"

#include <chrono>
#include <cstdio>
#include <iostream>
#include <limits>
#include <optional>
#include <system_error>
#include <unordered_map>

#include "../os/system.hpp"
#include "protocol/call.hpp"
#include "protocol/control.hpp"
#include "protocol/hello.hpp"
#include "protocol/ledger.hpp"
#include "protocol/result.hpp"
#include "protocol/task.hpp"

namespace multiproc::detail {

namespace {

using clock = std::chrono::steady_clock;

std::uint32_t microseconds_since(clock::time_point started) {
  const auto elapsed =
      std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - started).count();
  return static_cast<std::uint32_t>(
      std::min<long long>(elapsed, std::numeric_limits<std::uint32_t>::max()));
}

/// Runs one task frame (read from `channel`) and appends its result frame to `out`. A result
/// too large for the channel is left in a shared block, held in `held` until the parent
/// releases it (portable POSIX: its descriptor added to `attached`, for the write).
void answer_task(const frame_header& header, const char* body, handle_list& handles,
                 os::channel& channel, std::string& out, std::vector<os::native_handle>& attached,
                 std::unordered_map<std::uint64_t, os::shared_block>& held, bool shared_blocks) {
  result_frame frame(out, header.id);
  task_outcome outcome;
  os::shared_block result_block;
  std::size_t result_block_size = 0;
  const auto started = clock::now();
  task_body task;
  try {
    task = read_task(header, body, channel);
  } catch (const std::exception& e) {
    outcome.status = result_status::bad_arguments;
    outcome.message = std::string("could not map the arguments' shared block: ") + e.what();
  }
  if (outcome.status == result_status::ok) {
    // The parent never reads its copy of the arguments again (a task that ran is never sent
    // anew), so the block is given back as it is decoded.
    outcome = run_call_body(task.data, task.size, &out, frame.result_start(), shared_blocks,
                            &result_block, &result_block_size, &handles,
                            task.block ? &task.block : nullptr);
  }
  task.block = os::shared_block();
  frame.finish(outcome, microseconds_since(started), result_block, result_block_size, attached);
  if (outcome.status == result_status::ok && result_block) {
    held.emplace(header.id, std::move(result_block));
  }
}

}  // namespace

int run_worker(os::channel& channel, frame_reader& reader, bool shared_blocks) {
  os::block_broken_pipe_signal_in_this_thread();
  // Ctrl-C reaches the whole process group: the pool's owner decides (its handler, or its
  // death, after which this worker ends with it), not each worker on its own.
  os::ignore_interrupts();
  std::string out;
  std::vector<os::native_handle> attached;  // descriptors of result blocks in `out`
  std::unordered_map<std::uint64_t, os::shared_block> held;
  auto flush = [&] {
    if (!out.empty()) channel.write_all(out.data(), out.size(), attached);
    out.clear();
    attached.clear();
  };
  // The claim ledger, when the pool sent one (ledger.hpp): each task is claimed before it
  // runs, so the pool can take back those it sent but this worker has not started.
  os::shared_block ledger_block;
  std::optional<claim_word> ledger;
  std::uint64_t tasks_read = 0;
  bool ready = false;
  bool stopping = false;
  try {
    frame_header header{};
    const char* body = nullptr;
    for (;;) {
      // Answers to taken-back tasks wait for the next result, or go before this blocks.
      if (!reader.has_buffered_frame()) flush();
      if (!reader.next(header, body)) return 0;  // the parent is gone
      // Taken for every frame that has some, run or not: the next frame's come after them.
      handle_list handles = take_handles(header, body, channel);
      switch (header.kind) {
        case frame_kind::task:
          if (!ready) {  // a parent that sent no initializer frame
            append_ready(out);
            ready = true;
          }
          ++tasks_read;  // counted from the first task, ledger or not (ledger.hpp)
          if (ledger && !ledger->claim(tasks_read)) {
            forget_task(header, body, channel);
            append_skipped(out, header.id);
            break;
          }
          // Each result leaves before the next task starts: if that task crashes the worker,
          // the parent knows exactly which task was running, and no finished one is lost.
          answer_task(header, body, handles, channel, out, attached, held, shared_blocks);
          flush();
          break;
        case frame_kind::ledger:
          // Without its word this worker must not serve: the pool would take tasks back that
          // it then runs anyway. Exiting instead, it started none of them.
          try {
            const ledger_location where = read_ledger(header, body);
            ledger_block = os::shared_block::open_from_parent(where.token, where.size, channel);
            ledger.emplace(ledger_block.data() + where.offset);
          } catch (const std::exception& e) {
            std::fprintf(stderr, "multiproc: worker cannot map its claim ledger: %s; exiting\n",
                         e.what());
            append_ledger_refused(out);
            flush();
            return protocol_failure_exit_code;
          }
          break;
        case frame_kind::initializer: {
          const task_outcome outcome = header.body_size == 0
                                           ? task_outcome{}
                                           : run_call_body(body, header.body_size, nullptr, 0,
                                                           false, nullptr, nullptr, &handles);
          if (outcome.status != result_status::ok) {
            append_initializer_failed(out, outcome);
            flush();
            return 1;
          }
          // Ready only now: a worker whose initializer crashes counts as a failed start.
          if (!ready) append_ready(out);
          flush();
          ready = true;
          break;
        }
        case frame_kind::release:
          held.erase(header.id);
          if (stopping && held.empty()) return 0;
          break;
        case frame_kind::stop:
          // Results still in shared blocks must stay until the parent has mapped them.
          flush();
          if (held.empty()) return 0;
          stopping = true;
          break;
        default:
          std::fprintf(stderr, "multiproc: worker got an unknown frame (kind %d); exiting\n",
                       static_cast<int>(header.kind));
          return protocol_failure_exit_code;
      }
    }
  } catch (const std::system_error&) {
    return 0;  // the channel broke: the parent is gone, nobody is left to answer
  } catch (const std::exception& e) {
    std::fprintf(stderr, "multiproc: worker got a malformed frame (%s); exiting\n", e.what());
    return protocol_failure_exit_code;
  }
}

int run_process_call(const char* body, std::size_t size, handle_list& handles) {
  const task_outcome outcome =
      run_call_body(body, size, nullptr, 0, false, nullptr, nullptr, &handles);
  int code = 0;
  if (outcome.status == result_status::raised) {
    std::fprintf(stderr, "%s: %s\n", outcome.type_name.c_str(), outcome.message.c_str());
    code = 1;
  } else if (outcome.status != result_status::ok) {
    std::fprintf(stderr, "multiproc: %s\n", outcome.message.c_str());
    code = 1;
  }
  // The standard streams only: in a forked child any other FILE may hold the parent's bytes
  // (see src/posix/fork.cpp); a spawned child's exit() flushes the rest as any program's.
  std::cout.flush();
  std::cerr.flush();
  std::fflush(stdout);
  std::fflush(stderr);
  return code;
}

}  // namespace multiproc::detail
