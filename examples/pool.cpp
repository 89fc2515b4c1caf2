// The seed's Pool program: five tasks on a pool of four workers; the fifth starts only when
// one of the first four is done. With --apply the blocking apply() runs them one by one.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

void long_time_task(int name) {
  std::printf("Run task %d (%ld)...\n", name, mp::this_process::id());
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  std::mt19937 random(std::random_device{}());
  std::uniform_real_distribution<double> seconds(0.0, 3.0);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds(random)));
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  std::printf("Task %d runs %0.2f seconds.\n", name, took.count());
  std::fflush(stdout);
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const bool blocking = argc > 1 && std::strcmp(argv[1], "--apply") == 0;
  std::printf("Parent process %ld.\n", mp::this_process::id());
  std::fflush(stdout);
  mp::pool p(4);
  for (int i = 0; i < 5; ++i) {
    if (blocking) {
      p.apply(long_time_task, i);
    } else {
      p.apply_async(long_time_task, i);
    }
  }
  std::printf("Waiting for all subprocesses done...\n");
  std::fflush(stdout);
  p.close();
  p.join();
  std::printf("All subprocesses done.\n");
  return 0;
}
