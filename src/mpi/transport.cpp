// MPI under the mpi start method (see transport.hpp).
#include "transport.hpp"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#if defined(__linux__)
#include <sys/prctl.h>
#endif

namespace multiproc::detail::mpi {

namespace {
void check(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw std::runtime_error(std::string("multiproc: ") + what +
                           " failed: " + std::string(text, static_cast<std::size_t>(length)));
}

std::function<void()>* finalize_action = nullptr;
/// Called by MPI when it deletes MPI_COMM_SELF's attributes, first thing in MPI_Finalize.
int run_finalize_action(MPI_Comm, int, void*, void*) {
  if (finalize_action != nullptr && *finalize_action) (*finalize_action)();
  return MPI_SUCCESS;
}
}  // namespace

void backoff::pause() {
  using namespace std::chrono;
  constexpr int polls = 32;
  if (rounds_ < polls) {
    if (rounds_++ == 0) since_ = steady_clock::now();
    return;
  }
  const bool young = steady_clock::now() - since_ < milliseconds(50);
#if defined(__linux__)
  // Linux lets a sleep run up to the thread's timer slack (50 us by default) past its end: a
  // 20 us pause would take 70, and a round trip has several. This thread's own slack only.
  thread_local const bool tight = ::prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL) == 0;
  (void)tight;
#endif
  std::this_thread::sleep_for(young ? microseconds(20) : milliseconds(1));
}

int launcher_rank() noexcept {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}) {
    if (const char* value = std::getenv(name)) return std::atoi(value);
  }
  return -1;
}

transport& transport::instance() {
  static transport* const one = new transport;  // never destroyed: atexit handlers use it
  return *one;
}

std::unique_lock<std::mutex> transport::lock() {
  return serialise_ ? std::unique_lock<std::mutex>(mutex_) : std::unique_lock<std::mutex>();
}

void transport::start(std::function<void()> at_finalize) {
  std::lock_guard<std::mutex> guard(mutex_);
  if (started_) return;
  int initialised = 0;
  MPI_Initialized(&initialised);
  int provided = MPI_THREAD_SINGLE;
  if (initialised) {
    MPI_Query_thread(&provided);
  } else {
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    owns_mpi_ = true;
  }
  // Below MULTIPLE the library's threads take turns; the program's own MPI calls on rank 0
  // are its business (README: ask for MPI_THREAD_MULTIPLE if it calls MPI while pools run).
  serialise_ = provided < MPI_THREAD_MULTIPLE;
  check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  if (at_finalize) {
    at_finalize_ = std::move(at_finalize);
    finalize_action = &at_finalize_;
    int key = MPI_KEYVAL_INVALID;
    check(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, &run_finalize_action, &key, nullptr),
          "MPI_Comm_create_keyval");
    check(MPI_Comm_set_attr(MPI_COMM_SELF, key, nullptr), "MPI_Comm_set_attr");
  }
  started_ = true;
}

void transport::finish(bool always) {
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (finalised || !(owns_mpi_ || always)) return;
  MPI_Finalize();
}

void transport::complete(MPI_Request& request) {
  // A transfer under way moves only as fast as both sides poll (a large message goes in
  // fragments): poll back to back a while first, then back off, so only a peer that receives
  // nothing at all (its worker busy, its channel full) gets this thread to sleep.
  constexpr int eager_polls = 2000;
  backoff wait;
  for (int round = 0;; ++round) {
    int done = 0;
    {
      const auto held = lock();
      check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    }
    if (done) return;
    if (round >= eager_polls) wait.pause();
  }
}

void transport::send(int destination, tag kind, const void* data, std::size_t size) {
  if (size > static_cast<std::size_t>(INT_MAX)) throw std::length_error("multiproc: MPI message");
  MPI_Request request = MPI_REQUEST_NULL;
  {
    const auto held = lock();
    check(MPI_Isend(data, static_cast<int>(size), MPI_BYTE, destination, static_cast<int>(kind),
                    comm_, &request),
          "MPI_Isend");
  }
  complete(request);
}

bool transport::try_receive(int source, message& out) {
  MPI_Message handle = MPI_MESSAGE_NULL;
  MPI_Status status{};
  MPI_Request request = MPI_REQUEST_NULL;
  {
    const auto held = lock();
    int found = 0;
    check(MPI_Improbe(source, MPI_ANY_TAG, comm_, &found, &handle, &status), "MPI_Improbe");
    if (!found) return false;
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    out.source = status.MPI_SOURCE;
    out.kind = static_cast<tag>(status.MPI_TAG);
    out.bytes.resize(static_cast<std::size_t>(count));
    check(MPI_Imrecv(out.bytes.data(), count, MPI_BYTE, &handle, &request), "MPI_Imrecv");
  }
  complete(request);
  return true;
}

void transport::receive(int source, message& out) {
  backoff wait;
  while (!try_receive(source, out))
    wait.pause();
}

}  // namespace multiproc::detail::mpi
