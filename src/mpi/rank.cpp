// The worker ranks' side of the mpi start method, and mp::init's part on every rank. A worker
// rank waits for start messages from rank 0; each starts a session that runs the ordinary
// worker loop (or an mp::process's call) on a local channel, whose other end two bridge
// threads forward to and from rank 0 (the mirror of parent.cpp). maxtasksperchild and
// successive pools are new sessions on the same rank: the loop restarts, not the process.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <system_error>
#include <thread>
#include <vector>

#include "../core/launcher.hpp"
#include "../core/worker.hpp"
#include "../os/code_identity.hpp"
#include "../os/system.hpp"
#include "mpi.hpp"
#include "parent.hpp"
#include "session.hpp"
#include "transport.hpp"

namespace multiproc::detail::mpi {

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "multiproc: MPI worker rank: %s; aborting the MPI job\n", what);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

/// Runs one session; returns once rank 0 has closed it.
void serve_session(transport& mpi, const start_request& request) {
  auto [bridge_end, own_end] = os::make_channel_pair();
  std::string pid;
  append_u64(pid, static_cast<std::uint64_t>(os::current_pid()));
  mpi.send(0, tag::started, pid);
  std::atomic<int> ended_by{0};  // the signal terminate or kill stand for
  std::thread down([&] {
    try {
      message m;
      for (;;) {
        mpi.receive(0, m);
        if (m.kind == tag::data) {
          try {
            bridge_end.write_all(m.bytes.data(), m.bytes.size());
          } catch (const std::system_error&) {
            // The role ended already: rank 0 learns it from the end message.
          }
        } else if (m.kind == tag::terminate && session_of(m.bytes) == request.session) {
          int none = 0;
          ended_by.compare_exchange_strong(none, m.bytes.back() == 'k' ? SIGKILL : SIGTERM);
          bridge_end.close_write();  // the loop ends after the call it is running
        } else if (m.kind == tag::close && session_of(m.bytes) == request.session) {
          bridge_end.close_write();
          return;
        }
      }
    } catch (const std::exception& e) {
      fail(e.what());
    }
  });
  std::thread up([&] {
    try {
      std::vector<char> buffer(chunk_size);
      try {
        for (;;) {
          const std::size_t n = bridge_end.read_some(buffer.data(), buffer.size());
          if (n == 0) break;
          mpi.send(0, tag::data, buffer.data(), n);
        }
      } catch (const std::system_error&) {
      }
    } catch (const std::exception& e) {
      fail(e.what());
    }
  });
  int code = 0;
  {
    frame_reader reader(own_end);
    // Results travel inline: rank 0 cannot map this host's shared blocks.
    code = request.role == child_role::pool_worker
               ? run_worker(own_end, reader, false)
               : run_child(request.role, own_end, reader, {}, request.parent);
  }
  own_end.close();
  up.join();  // every byte the role wrote has left
  std::string body;
  // Read after the role ended: a terminate that came meanwhile is how the session ended.
  const int requested = ended_by;
  if (requested != 0) code = -requested;
  append_u64(body, static_cast<std::uint64_t>(static_cast<std::int64_t>(code)));
  mpi.send(0, tag::end, body);
  down.join();
}

[[noreturn]] void serve_rank_zero() {
  auto& mpi = transport::instance();
  try {
    mpi.start();
    message m;
    for (;;) {
      mpi.receive(0, m);
      if (m.kind == tag::finish) break;
      if (m.kind != tag::start) continue;  // a late message of a session that has ended
      start_request request;
      try {
        request = decode_start(m.bytes);
      } catch (const std::exception& e) {
        mpi.send(0, tag::refused, std::string("malformed start message: ") + e.what());
        continue;
      }
      if (request.identity != os::image_identity()) {
        mpi.send(0, tag::refused,
                 "rank 0 runs a different program image than this rank (" + request.identity +
                     " vs " + os::image_identity() + "); every rank must run the same build");
        continue;
      }
      serve_session(mpi, request);
    }
    mpi.finish(true);
  } catch (const std::exception& e) {
    fail(e.what());
  }
  std::exit(0);
}

}  // namespace

void init_rank(int /*argc*/, char** /*argv*/) {
  int initialised = 0;
  MPI_Initialized(&initialised);
  int rank = launcher_rank();
  if (initialised) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank < 0) return;  // not an MPI job
  if (rank != 0) serve_rank_zero();
  static bool once = false;
  if (once) return;
  once = true;
  try {
    start_as_rank_zero();
  } catch (const std::exception& e) {
    fail(e.what());
  }
  static const long owner = os::current_pid();
  // A forked child of rank 0 that calls exit() must not finalise its parent's MPI.
  std::atexit([] {
    if (os::current_pid() != owner) return;
    release_worker_ranks();
    transport::instance().finish(false);
  });
}

}  // namespace multiproc::detail::mpi
