// multiproc — start-up: mp::init, start methods.
#pragma once

#include <string>

#include <multiproc/config.hpp>

namespace multiproc {

/// How a child process starts.
enum class start_method {
  /// fork(): the child is a copy of the parent and runs the target directly. POSIX only. In a
  /// program with threads of its own it may inherit a lock another thread held at the fork,
  /// held for ever in the child (see automatic).
  fork,
  /// Re-execute this program's own image; the child is diverted by mp::init into the target.
  /// Works everywhere; the only method on Windows.
  spawn,
  /// A fork server: a copy of the program started (by spawn) the first time it is needed,
  /// with one thread and no lock held, forks each child (one ahead of each request, shown as
  /// "mp-spare" while it waits) and hands it over. As fast as fork, as safe as spawn with
  /// threads. Children behave as forked ones (exit codes,
  /// terminate, kill, join, pool worker replacement) but start from the server's memory: the
  /// program's state at the server's start, plus what the preload calls did
  /// (mp::set_forkserver_preload), not the parent's present state. Linux 5.3 or later only:
  /// elsewhere (Windows, the portable POSIX build) mp::start_method_available says false and
  /// starting with it throws mp::start_error.
  forkserver,
  /// Decided at each start: fork while the program runs no thread but the main thread and
  /// multiproc's own (pool supervisors), otherwise forkserver (spawn where there is none).
  /// spawn on Windows. mp::resolve_start_method tells what it picks now; mp::process::method
  /// what it picked for a started process. The default on Linux.
  automatic,
  /// The ranks of an MPI job (started as: mpirun -n N app) as workers: rank 0 runs main, mp::init
  /// turns every other rank into a worker that serves pools one after another. Built only with
  /// CMake MULTIPROC_MPI=ON (POSIX); available only in a program started by an MPI launcher.
  /// Arguments and results travel as bytes in MPI messages (never shared memory, never
  /// handles: a queue or pipe argument is refused with serialization_error). Elsewhere
  /// mp::start_method_available says false and starting with it throws mp::start_error.
  mpi,
};

/// The `if __name__ == "__main__"` guard: call it as the first line of main(). In a child
/// started by `spawn` it runs the child's work and ends the process (it never returns there);
/// everywhere else it returns at once. A program started with the spawn marker set but
/// without a valid channel from its parent prints why and exits with code 86 (never runs
/// main: no fork bomb). With MULTIPROC_MPI=ON, in a program an MPI launcher started: on ranks
/// 1..N-1 it initialises MPI (if the program has not), serves as a worker of rank 0's
/// start_method::mpi pools and processes, and ends the process (exit code 0) once rank 0's
/// program ends; on rank 0 it returns, and MPI is finalised when the program exits (unless the
/// program initialised MPI itself: then its own MPI_Finalize releases the worker ranks).
/// Throws nothing.
MULTIPROC_API void init(int argc, char** argv);

/// The start method chosen at build time (CMake MULTIPROC_BACKEND: auto, fork, forkserver,
/// spawn or mpi; unset: automatic on POSIX, spawn on Windows). Throws nothing.
MULTIPROC_API start_method default_start_method() noexcept;

/// Whether `method` can be used on this platform: spawn and automatic everywhere; fork on
/// POSIX; forkserver on Linux 5.3 or later outside the portable POSIX build; mpi in a POSIX
/// build with MULTIPROC_MPI=ON, in a program an MPI launcher started (mpirun, mpiexec) or
/// that initialised MPI itself. Throws nothing.
MULTIPROC_API bool start_method_available(start_method method) noexcept;

/// The start method a start with `method` would use now: `method` itself, unless it is
/// automatic -- then fork if the program runs no thread but its main thread and multiproc's
/// own, else forkserver (spawn where forkserver is not available, or where the threads cannot
/// be counted); spawn on Windows. Counting costs a read of /proc/self/stat (a few
/// microseconds); a thread started while it is read may be missed. Throws nothing.
MULTIPROC_API start_method resolve_start_method(start_method method) noexcept;

/// Sets the program spawned children run, like Python's set_executable; empty restores the
/// default (this program's own image: /proc/self/exe on Linux, GetModuleFileNameW on
/// Windows). The program must be this same program: the start-up handshake checks it. Takes
/// effect for children started afterwards; the path is not checked here. Throws
/// mp::start_error on Windows if `utf8_path` is not valid UTF-8 (the previous setting then
/// stays); throws nothing else but std::bad_alloc.
MULTIPROC_API void set_executable(const std::string& utf8_path);

}  // namespace multiproc
