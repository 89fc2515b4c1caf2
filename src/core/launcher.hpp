// Starting a child, the one place that knows fork from spawn and the fork server: mp::process
// and the pool's supervisors call launch(), which also resolves the automatic start method; a
// spawned child comes back in through run_child() after its hello, and so does a child of the
// fork server after its fork. Later start methods (MPI) are further cases here.
#pragma once

#include <string>
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
  start_method method = start_method::spawn;  ///< automatic is resolved at the launch
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
  /// How it was started (never automatic).
  start_method method = start_method::spawn;
};

/// Starts a child as `plan` says: fork (an mp::process runs its call at once, from the memory
/// it inherited, with its handles kept through the fork; a pool worker still gets its
/// initializer frame through its channel), spawn (the program re-executed; the hello, then
/// the call's frame, through its channel) or forkserver (the server forks it; the call's frame
/// through its channel, as for spawn but without a hello). A fork server found dead is
/// replaced once, within the same launch. A child that dies before it has read its call is
/// not an error here: its exit code (or, for a worker, the end of its channel) says so.
/// Throws start_error (fork/spawn/channel failures, with the OS error); on any other
/// exception after the child exists, the child is killed and reaped first.
launched launch(const launch_plan& plan);

/// In a spawned child whose hello was accepted, or a child of the fork server: runs `role`
/// (reading its payload from `reader`) and returns the process's exit code. The fork server's
/// role needs the spawn `secret` and the `parent` the hello named.
int run_child(child_role role, os::channel& channel, frame_reader& reader, std::string_view secret,
              long parent);

/// A fresh random secret for one spawn, as hex. Throws start_error.
std::string make_secret();

/// Marks the calling thread as one of multiproc's own (a pool supervisor, the rebalancer) for
/// the object's life: the automatic start method does not count it as the program's.
class own_thread {
 public:
  own_thread() noexcept;
  ~own_thread();
  own_thread(const own_thread&) = delete;
  own_thread& operator=(const own_thread&) = delete;
};

/// Throws start_error naming mp::init if this is a spawned child mp::init never diverted.
void ensure_may_start();
/// `method`, or start_error if it is not available on this platform (saying why).
start_method checked_method(start_method method);
/// The method's name as the user writes it ("fork", "spawn", "forkserver", "automatic",
/// "mpi").
const char* method_name(start_method method) noexcept;

}  // namespace multiproc::detail
