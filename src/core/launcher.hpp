// Starting a child, the one place that knows fork from spawn: mp::process and the pool's
// supervisors call launch(); a spawned child comes back in through run_child() after its
// hello. Later start methods (forkserver, MPI) are further cases here.
#pragma once

#include <string_view>

#include <multiproc/init.hpp>

#include "../os/channel.hpp"
#include "../os/child.hpp"
#include "protocol/frame.hpp"
#include "protocol/hello.hpp"

namespace multiproc::detail {

struct encoded_call;

/// What launch() starts.
struct launch_plan {
  start_method method = start_method::spawn;
  child_role role = child_role::process;
  /// process: the call it runs once. pool_worker: its initializer (null: none). The handles
  /// the call carries reach the child with it.
  const encoded_call* call = nullptr;
};

/// A started child and the parent's end of its channel.
struct launched {
  os::child child;
  /// The parent's end; closed for an mp::process, which is told everything at start.
  os::channel channel;
};

/// Starts a child as `plan` says: fork (an mp::process runs its call at once, from the memory
/// it inherited, with its handles kept through the fork; a pool worker still gets its
/// initializer frame through its channel) or spawn (the program re-executed; the hello, then
/// the call's frame, through its channel). A child that dies before it has read its call is
/// not an error here: its exit code (or, for a worker, the end of its channel) says so.
/// Throws start_error (fork/spawn/channel failures, with the OS error); on any other
/// exception after the child exists, the child is killed and reaped first.
launched launch(const launch_plan& plan);

/// In a spawned child whose hello was accepted: runs `role` (reading its payload from
/// `reader`) and returns the process's exit code.
int run_child(child_role role, os::channel& channel, frame_reader& reader);

/// Throws start_error naming mp::init if this is a spawned child mp::init never diverted.
void ensure_may_start();
/// `method`, or start_error if it is not available on this platform.
start_method checked_method(start_method method);

}  // namespace multiproc::detail
