// Between rank 0's side (parent.cpp) and mp::init's part (rank.cpp).
#pragma once

namespace multiproc::detail::mpi {

/// Rank 0: starts the transport, so that MPI_Finalize (the program's or the library's at exit)
/// first releases the worker ranks. Throws std::runtime_error if MPI fails.
void start_as_rank_zero();
/// Rank 0: waits for every session to end, then tells each worker rank to finish. Called at
/// the start of MPI_Finalize; idempotent. Aborts the job if a session does not end within 30 s.
void release_worker_ranks() noexcept;

}  // namespace multiproc::detail::mpi
