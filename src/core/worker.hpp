// The child's side of both roles: the pool worker loop, and an mp::process's one call.
#pragma once

#include <cstddef>

#include "../os/channel.hpp"
#include "protocol/frame.hpp"

namespace multiproc::detail {

/// The worker loop of a pool worker: runs its initializer, then answers tasks until a stop
/// frame or the end of its channel (its parent is gone); returns the process exit code.
/// `shared_blocks`: whether a large result may go back in a shared block; false where the
/// parent is on another host (an MPI rank), so every result travels inline.
int run_worker(os::channel& channel, frame_reader& reader, bool shared_blocks = true);

/// Runs one encoded call as an mp::process child, with the `handles` its arguments carry;
/// returns the exit code (1 if it threw, after printing "<type>: <what>" to stderr), after
/// flushing the child's output.
int run_process_call(const char* body, std::size_t size, handle_list& handles);

}  // namespace multiproc::detail
