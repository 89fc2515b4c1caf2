// The fork server's set-up frame, parent -> server, right after the hello: the preload calls
// the server runs before it forks anything, and the server's end of its request link. The
// server answers with `ready` or `initializer_failed` (control.hpp). Requests themselves do
// not travel as frames: they are records on the link (src/os/forkserver.hpp).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../../os/child.hpp"
#include "../../os/handle.hpp"
#include "call.hpp"
#include "frame.hpp"

namespace multiproc::detail {

/// Appends the set-up frame: the bodies of the `preload` calls, in order, then `link` as its
/// one handle (passed to `receiver`; on POSIX added to `attached`, for the write). Throws
/// std::system_error if the handle cannot be passed.
void append_forkserver_setup(std::string& out,
                             const std::vector<std::shared_ptr<const encoded_call>>& preload,
                             os::native_handle link, const os::child& receiver,
                             std::vector<os::native_handle>& attached);

/// Server side: the preload call bodies of a set-up frame whose handle was taken already
/// (take_handles). They point into `body`. Throws std::runtime_error if the frame is
/// malformed.
std::vector<std::string_view> read_forkserver_setup(const frame_header& header, const char* body);

}  // namespace multiproc::detail
