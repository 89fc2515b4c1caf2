// The mpi start method's interface to the portable core (launcher, init, pool): the ranks of an
// MPI job as workers. Implemented by src/mpi/{transport,parent,rank}.cpp when multiproc is
// built with MULTIPROC_MPI=ON, by src/mpi/none.cpp otherwise (and always on Windows). No MPI
// header here: the core never sees MPI.
#pragma once

#include <string>

#include "../core/launcher.hpp"

namespace multiproc::detail::mpi {

/// True if this build has the mpi method and this program runs as rank 0 of an MPI job (an
/// MPI launcher started it, or it initialised MPI itself). Throws nothing.
bool available() noexcept;
/// Why available() is false, as a parenthesised clause for start_error's message.
std::string why_unavailable();

/// mp::init's part: on ranks 1..N-1 of an MPI job, serves rank 0 as a worker and ends the
/// process once rank 0's program ends (never returns there); on rank 0, arranges for the
/// worker ranks to be released when the program exits; elsewhere does nothing.
void init_rank(int argc, char** argv);

/// The worker count of an mpi pool that asks for `asked` processes (0: every worker rank).
/// Throws start_error if MPI is not available, or if more ranks are asked for than the job
/// has (the message says how many it has).
unsigned pool_size(unsigned asked);

/// Starts `plan` (a pool worker or an mp::process) on a free worker rank: the returned
/// channel is a local socket whose other end a bridge forwards to the rank, and the child a
/// remote one (os::remote_child). Throws start_error: no rank free (all serve another pool),
/// the rank refused (another build of the program), or the call carries handles.
launched launch(const launch_plan& plan);

}  // namespace multiproc::detail::mpi
