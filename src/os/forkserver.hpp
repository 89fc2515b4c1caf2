// The backend seam, part 10: the fork server. POSIX only (MULTIPROC_HAS_FORK); twins:
// src/posix/forkserver_linux.cpp (Linux) and src/posix/forkserver_portable.cpp (the portable
// POSIX build, which has none). Windows has no fork, so there is no src/win32 twin: core
// reaches this header only from src/core/forkserver.cpp, which is built where fork exists.
//
// The server is a spawned copy of the program (clean: one thread, no lock held by anyone)
// that forks children on request. Requests travel on a link of its own: a Unix seqpacket
// socketpair, so no other process can connect to it, each request is one record, and the
// kernel tells the server which process sent each one.
#pragma once

#include <chrono>

#include <cstdint>
#include <string_view>
#include <utility>

#include <multiproc/config.hpp>

#include "channel.hpp"
#include "child.hpp"

namespace multiproc::detail::os {

#if MULTIPROC_HAS_FORK
/// True where a fork server can run: Linux 5.3 or later (pidfds); false in the portable POSIX
/// build. Never throws.
bool forkserver_supported() noexcept;

/// The link between a requester and its server: `first` is the requester's end, `second` the
/// server's (it travels to the server as a handle). Throws start_error.
std::pair<channel, channel> make_forkserver_link();

/// Requester side: asks the server at the other end of `link`, with `secret` (the server's
/// spawn secret), to fork a child that runs `role` (a byte the server only passes on) with
/// `child_end` as its channel, this process's standard input, output and error and its
/// working directory, tied to the server's life if `kind` says so. Closes `child_end` here on
/// every path. Returns this process's end of the child's report socket, for
/// receive_fork_answer. Throws start_error: with errc::broken_pipe if the server is gone (the
/// link is then useless), else with the OS error.
owned_handle send_fork_request(channel& link, std::string_view secret, std::uint8_t role,
                               child_kind kind, channel& child_end);
/// Requester side: the server's answer to the request just sent on `link`: the child, with its
/// pid, a pidfd, and `report`, where the server reports its end. Throws start_error: with
/// errc::broken_pipe if the server is gone, errc::timed_out if no answer came within `limit`
/// (a server stopped or starved: the caller replaces it), errc::permission_denied if it
/// refused the request, errc::protocol_error for an answer that is not one, else the server's
/// fork error.
child receive_fork_answer(channel& link, owned_handle report, std::chrono::milliseconds limit);

/// What a child of the server runs: its role and its channel; returns its exit code.
using forked_entry = int (*)(std::uint8_t role, channel& own);

/// Server side: serves the requests of process `requester` on `link` until the requester is
/// gone (its end of the link closed, or the process ended), then exits without running the
/// program's exit handlers. A request is served only if the kernel says `requester` sent it
/// and it carries `secret`; others are refused and logged to stderr. Each child it forks runs
/// `entry` with the request's channel, stdio and working directory, and `requester` as its
/// logical parent (mp::this_process::parent_id()); the server reaps it and reports how it
/// ended to the requester. Never returns.
[[noreturn]] void serve_forks(channel& link, std::string_view secret, long requester,
                              forked_entry entry);
#endif

}  // namespace multiproc::detail::os
