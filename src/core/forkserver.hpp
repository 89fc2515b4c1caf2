// The fork server in core, both sides: the requester's connection to this process's server
// (started on first use, replaced once it is found dead) and the server's role after its hello
// (the preload calls, then the OS's request loop, src/os/forkserver.hpp). Built only where
// fork exists (POSIX): the launcher reaches it inside its MULTIPROC_HAS_FORK part.
//
// The server's life: spawned by the first start that needs it, from whichever thread; then
// it lives as long as the process that started it (it ends when that process's end of the
// link closes or the process ends), serving every thread of it. A copy of the process made by
// fork starts its own. Pool workers it forks are tied to it (PR_SET_PDEATHSIG), so they end
// with it, and it ends with its requester.
#pragma once

#include <chrono>
#include <string_view>

#include "../os/channel.hpp"
#include "../os/child.hpp"
#include "protocol/frame.hpp"
#include "protocol/hello.hpp"

namespace multiproc::detail {

/// Requester side: a child forked by this process's fork server, running `role` with
/// `child_end` as its channel (closed here on every path); the server is started first if
/// none runs. Throws start_error: errc::broken_pipe if the server turned out to be gone (it
/// is reaped then, and the next call starts a new one), or why the server could not start
/// (its preload's error included) or fork.
os::child fork_from_server(child_role role, os::channel& child_end);

/// Server side, in the spawned server once its hello was accepted: reads the set-up frame,
/// runs the preload calls, says ready, and serves `requester` (authenticated by `secret`, the
/// spawn secret) until it is gone -- then the process ends. Returns only if the set-up fails:
/// the exit code.
int run_forkserver(os::channel& channel, frame_reader& reader, std::string_view secret,
                   long requester);

// ---- for the tests' resource accounting and fault injection -------------------------------
/// How long a start waits for the server's answer before it replaces the server and fails
/// with errc::timed_out (default 30 s).
void set_forkserver_answer_limit(std::chrono::milliseconds limit) noexcept;
/// The pid of this process's fork server (running, or ended and not reaped yet); 0 if none.
long forkserver_pid() noexcept;
/// Descriptors this process holds for its fork server (its link and its pidfd).
int forkserver_descriptors() noexcept;
/// Ends this process's fork server (closes its link, then waits for it; kills it after 10 s)
/// and reaps it. The pool workers it forked end with it. Throws nothing.
void stop_forkserver() noexcept;
/// Sends a request for an mp::process child on the server's link as this process holds it --
/// in a copy made by a raw fork() too -- carrying `secret` in place of the server's own when
/// not empty. With `await_answer`, waits for the answer: returns 0 if a child was forked (it is
/// killed and reaped), else the error the request was refused with. Without, returns 0 once
/// sent. Throws start_error if there is no server or the link is broken.
int send_forged_fork_request(std::string_view secret, bool await_answer);

}  // namespace multiproc::detail
