// MPI under the mpi start method: one transport per process, which owns the job's private
// communicator and is the only code that calls MPI (src/mpi/ only; see mpi.hpp).
#pragma once

#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

namespace multiproc::detail::mpi {

/// What a message between rank 0 and a worker rank is (its MPI tag).
enum class tag : int {
  start = 1,      ///< 0 -> rank: serve a role (start_request); answered by started or refused
  started = 2,    ///< rank -> 0: the session runs; body: the rank's pid (u64)
  refused = 3,    ///< rank -> 0: the start was refused; body: why
  data = 4,       ///< either way: the next bytes of the session's channel
  close = 5,      ///< 0 -> rank: the pool closed its end; no more data this session
  end = 6,        ///< rank -> 0: the session's role ended; body: its exit code (u64, two's c.)
  terminate = 7,  ///< 0 -> rank: end the session (its running call still finishes)
  finish = 8,     ///< 0 -> rank: rank 0's program ends; finalise and exit
};

/// One received message.
struct message {
  int source = 0;
  tag kind = tag::data;
  std::string bytes;
};

/// Waits between polls: a few polls back to back, then sleeps of 20 µs while the wait is
/// young (an answer usually comes within a task's time), then of a millisecond, so an idle
/// rank costs next to no CPU. On Linux the polling thread's timer slack is set to 1 µs, so a
/// 20 µs sleep is not stretched to 70 (the default slack is 50 µs). Never sched_yield: on a loaded
/// machine one yield can give the CPU away for a whole round of the other runnable tasks. (Open
/// MPI's blocking calls spin, which on an oversubscribed machine takes the CPUs the workers need.)
class backoff {
 public:
  void pause();

 private:
  int rounds_ = 0;
  std::chrono::steady_clock::time_point since_{};
};

/// The rank the MPI launcher gave this process (its environment: Open MPI, PMIx, MPICH's
/// Hydra), or -1 if no launcher started it. Usable before MPI is initialised.
int launcher_rank() noexcept;

/// MPI for the mpi start method. Every call after start() is serialised through one mutex
/// unless MPI provides MPI_THREAD_MULTIPLE. Nonblocking calls are polled with a backoff,
/// so no thread holds the lock while it waits.
class transport {
 public:
  /// The process's transport (never destroyed: it is used from atexit handlers).
  static transport& instance();

  /// Initialises MPI (MPI_Init_thread asking for MPI_THREAD_MULTIPLE) unless the program did,
  /// and duplicates MPI_COMM_WORLD (collective: every rank calls it once, in the same order
  /// as its other collectives on MPI_COMM_WORLD). On rank 0, `at_finalize` runs at the start
  /// of MPI_Finalize, whoever calls it (an attribute of MPI_COMM_SELF: MPI deletes those
  /// first, while MPI still works). Idempotent. Throws std::runtime_error if MPI fails.
  void start(std::function<void()> at_finalize = {});
  bool started() const noexcept { return started_; }
  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  /// MPI_Finalize, if start() initialised MPI or `always` (a worker rank, where the program
  /// never resumes), else the program finalises it. No-op if MPI is finalised already.
  void finish(bool always);

  /// Sends `size` bytes to `destination`; returns once the buffer may be reused.
  void send(int destination, tag kind, const void* data = nullptr, std::size_t size = 0);
  void send(int destination, tag kind, std::string_view bytes) {
    send(destination, kind, bytes.data(), bytes.size());
  }
  /// The next message from `source`, if one has arrived. `out`'s buffer is reused: a loop
  /// that keeps one message costs no allocation (and no page faults) per message.
  bool try_receive(int source, message& out);
  /// Waits for the next message from `source`, into `out` (as try_receive).
  void receive(int source, message& out);

 private:
  transport() = default;
  std::unique_lock<std::mutex> lock();
  /// Polls `request` until it completes.
  void complete(MPI_Request& request);

  std::mutex mutex_;
  bool serialise_ = true;
  bool started_ = false;
  bool owns_mpi_ = false;
  int rank_ = -1;
  int size_ = 0;
  MPI_Comm comm_ = MPI_COMM_NULL;
  std::function<void()> at_finalize_;
};

}  // namespace multiproc::detail::mpi
