// A program whose main() forgets mp::init. Started normally it spawns a child of itself; that
// child runs main() again and must be refused when it tries to start a process (no fork bomb).
#include <cstdio>
#include <cstring>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

void child_target() {}

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--plain") == 0) {
    mp::init(argc, argv);  // with a forged marker and no channel, this must not return
    std::puts("ran normally");
    return 0;
  }
  try {
    mp::process p(mp::start_method::spawn, child_target);
    p.start();
    p.join();
    std::printf("child exit code %d\n", p.exitcode().value_or(-1000));
    return 0;
  } catch (const mp::start_error& e) {
    std::printf("refused: %s\n", e.what());
    std::fflush(stdout);
    return 42;
  }
}
