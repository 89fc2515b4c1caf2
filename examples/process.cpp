// The seed's Process program: run a function in a child process and wait for it.
// With --no-join the parent goes on at once, so "Child process end." comes before the
// child's output, as the seed shows when join() is left out.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

void run_proc(std::string name) {
  (void)name;
  // The child takes a moment, as real work would: without join() the parent is sure to go on
  // (and print "Child process end.") before the child prints. With join() nothing changes.
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  long result = 0;
  for (int each = 0; each < 100000; ++each)
    result = result + 1;
  std::printf("%ld\n", result);
  std::fflush(stdout);
}

int main(int argc, char** argv) {
  mp::init(argc, argv);  // first: a spawned child is diverted here and never returns
  const bool join = !(argc > 1 && std::strcmp(argv[1], "--no-join") == 0);
  std::printf("Parent process %ld.\n", mp::this_process::id());
  mp::process p(run_proc, std::string("test"));
  std::printf("Child process will start.\n");
  std::fflush(stdout);
  p.start();
  if (join) p.join();
  std::printf("Child process end.\n");
  std::fflush(stdout);
  return 0;  // without --no-join's join(), the destructor still waits: no zombie is left
}
