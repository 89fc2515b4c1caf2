// multiproc — the fork server's preload (Python's set_forkserver_preload).
#pragma once

#include <vector>

#include <multiproc/config.hpp>
#include <multiproc/pool.hpp>

namespace multiproc {

#if MULTIPROC_HAS_FORK
/// Python's set_forkserver_preload: `calls` (mp::call(f, args...)) run once in the fork server
/// when it starts, in order, before it forks any child, so that every child of the server
/// starts warm, with what they did (data loaded, tables built, libraries opened) already in
/// its memory. Replaces the previous list (empty: none); the list is read when a server
/// starts, so set it before the first start on forkserver (or on automatic in a threaded
/// program). If a call throws or ends the server, no server starts: the start that needed
/// one throws mp::start_error with the call's error (and so does each later one, trying
/// again). Throws mp::state_error if this process's fork server is already running,
/// std::invalid_argument for an empty call or one whose arguments carry a queue, pipe or
/// shared object. POSIX only; where forkserver is not available the calls never run.
MULTIPROC_API void set_forkserver_preload(std::vector<call> calls);
#endif

}  // namespace multiproc
