// The backend seam, part 5: spawn, i.e. re-executing this program as a child.
// Twins: src/posix/spawn.cpp, src/win32/spawn.cpp.
#pragma once

#include <string>
#include <string_view>

#include "channel.hpp"
#include "child.hpp"

namespace multiproc::detail::os {

/// Name of the environment variable that marks a spawned child.
inline constexpr const char* spawn_marker_variable = "MULTIPROC_SPAWNED";

/// Re-executes this program's own image (or the set executable) with `child_end` as its
/// only inherited channel besides stdio, and the worker marker carrying `secret` in its
/// environment. Closes `child_end` in this process on every path. Throws start_error with the
/// OS error (exec failures included) and leaves no zombie behind.
child spawn_child(channel& child_end, std::string_view secret, child_kind kind);

/// In a spawned child: takes the channel named by the token the parent put in the marker.
/// Returns a closed channel if the token names no usable channel.
channel adopt_inherited_channel(std::string_view token);

/// In a child: ties this process's life to its parent `expected_parent` where the platform can
/// (Linux: PR_SET_PDEATHSIG; Windows: the job object did so already). Returns false if the
/// parent has already gone.
bool die_with_parent(long expected_parent) noexcept;

/// In a spawned child: takes the command name (what ps and top show) of its parent
/// `expected_parent`, as a forked child has it. Linux only, where the image is run as
/// /proc/self/exe and the kernel names the child "exe"; elsewhere the name comes from the
/// image's path and this does nothing. Nothing either if the parent has gone.
void take_parent_name(long expected_parent) noexcept;

/// Overrides the program spawned children run (empty: this program's own image).
void set_spawn_executable(std::string utf8_path);

}  // namespace multiproc::detail::os
