// multiproc — Python's multiprocessing for C++. The one include a user needs.
#pragma once

#include <multiproc/async_result.hpp>
#include <multiproc/config.hpp>
#include <multiproc/connection.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/forkserver.hpp>
#include <multiproc/init.hpp>
#include <multiproc/pool.hpp>
#include <multiproc/process.hpp>
#include <multiproc/progress.hpp>
#include <multiproc/queue.hpp>
#include <multiproc/serialization.hpp>
#include <multiproc/shared_memory.hpp>
#include <multiproc/synchronize.hpp>
#include <multiproc/this_process.hpp>
#include <multiproc/wait.hpp>

/// Python's multiprocessing for C++: mp::process runs a function in another process, mp::pool
/// spreads calls over worker processes, mp::init is the `if __name__ == "__main__"` guard.
/// Programs usually write `namespace mp = multiproc;`.
namespace multiproc {}
