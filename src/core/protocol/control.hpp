// The control frames: `ready` and `initializer_failed` (worker -> parent: how its start-up
// went) and `stop` (parent -> worker: finish and exit).
#pragma once

#include <exception>
#include <string>

#include "call.hpp"
#include "frame.hpp"

namespace multiproc::detail {

/// Appends a ready frame (carrying the worker's pid).
void append_ready(std::string& out);
/// Appends a stop frame.
void append_stop(std::string& out);

/// Appends an initializer_failed frame describing `outcome`.
void append_initializer_failed(std::string& out, const task_outcome& outcome);
/// Parent side: the error that breaks the pool, from an initializer_failed frame of the worker
/// `worker_pid`: mp::state_error naming the initializer's error. Never throws for what the
/// frame says.
std::exception_ptr read_initializer_failed(const frame_header& header, const char* body,
                                           long worker_pid);

}  // namespace multiproc::detail
