// The seed's os.fork() program: one process becomes two.
#include <sys/wait.h>

#include <cstdio>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::printf("Process (%ld) start...\n", mp::this_process::id());
  std::fflush(stdout);
  const long pid = mp::fork();
  if (pid == 0) {
    std::printf("I am child process (%ld) and my parent is (%ld).\n", mp::this_process::id(),
                mp::this_process::parent_id());
  } else {
    std::printf("I (%ld) just created a child process (%ld).\n", mp::this_process::id(), pid);
    std::fflush(stdout);
    // Unlike the seed, the parent reaps its child: no zombie, and the child still sees it.
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
  }
  return 0;
}
