// A program that calls MPI itself besides using an mpi pool (tests/mpi/CMakeLists.txt).
// argv[1]: "before" (it initialises MPI before mp::init and finalises it itself), "after" (it
// finds MPI initialised by mp::init and uses it, leaving the finalisation to multiproc), or
// "exit-code" (returns 7: rank 0's exit code is the job's), or "other-build" (the worker ranks
// run another build of this program, MULTIPROC_TEST_VARIANT: a pool must be refused).
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

namespace {
#if defined(MULTIPROC_TEST_VARIANT)
// Makes this build's image (and so its build id) differ from the main one's.
volatile const char* const variant = "another build";
#endif

int twice(int x) {
  return 2 * x;
}

bool pool_works() {
  mp::pool pool(mp::pool_options{.processes = 0, .method = mp::start_method::mpi});
  const std::vector<int> ys = pool.map(twice, std::vector<int>{1, 2, 3, 4, 5});
  return ys == std::vector<int>{2, 4, 6, 8, 10};
}

/// The program's own traffic on MPI_COMM_WORLD, to itself, while a pool is alive: the pool's
/// messages travel on a private communicator, so neither sees the other's.
bool own_traffic_works() {
  mp::pool pool(mp::pool_options{.processes = 0, .method = mp::start_method::mpi});
  auto pending = pool.apply_async(twice, 21);
  int sent = 1234;
  int received = 0;
  MPI_Sendrecv(&sent, 1, MPI_INT, 0, 0, &received, 1, MPI_INT, 0, 0, MPI_COMM_WORLD,
               MPI_STATUS_IGNORE);
  return received == sent && pending.get() == 42;
}
}  // namespace

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "before";
  if (std::strcmp(mode, "before") == 0) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    int size = 0;
    int one = 1;
    int sum = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);  // every rank, before
    mp::init(argc, argv);                                            // ranks 1..N-1 serve from here
    const bool ok = sum == size && pool_works() && own_traffic_works() && pool_works();
    std::printf("before: %s\n", ok ? "ok" : "FAILED");
    MPI_Finalize();  // releases the worker ranks first
    return ok ? 0 : 1;
  }
  mp::init(argc, argv);
#if defined(MULTIPROC_TEST_VARIANT)
  std::printf("%s\n", variant);  // never reached: ranks 1..N-1 serve in mp::init
#endif
  if (std::strcmp(mode, "other-build") == 0) {
    try {
      pool_works();
      std::printf("other-build: FAILED (a rank of another build served)\n");
      return 1;
    } catch (const mp::start_error& e) {
      const bool named = std::string(e.what()).find("different program image") != std::string::npos;
      std::printf("other-build: %s (%s)\n", named ? "ok" : "FAILED", e.what());
      return named ? 0 : 1;
    }
  }
  if (std::strcmp(mode, "after") == 0) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) MPI_Init(&argc, &argv);
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const bool ok = rank == 0 && pool_works() && own_traffic_works();
    std::printf("after: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
  }
  return pool_works() ? 7 : 1;
}
