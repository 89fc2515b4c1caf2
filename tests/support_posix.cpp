// Resource counting on POSIX: the facts come from the system's process table through one
// helper (support_process_facts.hpp: /proc on Linux, libproc on macOS).
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "../src/core/forkserver.hpp"
#include "support.hpp"
#include "support_process_facts.hpp"

namespace multiproc_test {

resource_counts count_resources() {
  const process_facts facts = read_process_facts();
  resource_counts counts;
  // The fork server's link serves test after test: not a leak of any one of them.
  counts.descriptors = facts.descriptors - multiproc::detail::forkserver_descriptors();
  counts.children = facts.children;
  counts.zombies = facts.zombies;
  counts.shared_segments = facts.shared_segments;
  counts.shared_block_descriptors = facts.shared_block_descriptors;
  counts.shared_block_mappings = facts.shared_block_mappings;
  counts.threads = facts.threads;
  return counts;
}

void kill_from_outside(long pid) {
  ::kill(static_cast<pid_t>(pid), SIGKILL);
}
int abort_exit_code() {
  return -SIGABRT;
}
int sigterm_exit_code() {
  return -SIGTERM;
}
int sigkill_exit_code() {
  return -SIGKILL;
}

std::string temporary_path(const std::string& stem) {
  const char* base = std::getenv("TMPDIR");
  static int counter = 0;
  return std::string(base ? base : "/tmp") + "/multiproc-test-" + std::to_string(::getpid()) + "-" +
         std::to_string(++counter) + "-" + stem;
}

}  // namespace multiproc_test

namespace multiproc_test {
int outside_kill_exit_code() {
  return -SIGKILL;
}
}  // namespace multiproc_test
