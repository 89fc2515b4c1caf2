// Where the POSIX tests' resource checks get their facts: the system's process table, which
// Linux shows in /proc (support_procfs.cpp, every Linux configuration, the portable one
// included) and macOS through libproc (support_libproc.cpp). One helper, so the checks
// themselves (support_posix.cpp) are the same on both.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace multiproc_test {

/// This process as the system sees it now.
struct process_facts {
  /// Open descriptors (the fork server's included; the caller takes those off).
  int descriptors = 0;
  /// Children of this process, and of its fork server, by state; the server itself not.
  int children = 0;
  int zombies = 0;
  /// Named shared-memory segments of the system (Linux: /dev/shm). macOS cannot list them.
  int shared_segments = 0;
  /// The library's payload blocks held as descriptors, and as mappings.
  int shared_block_descriptors = 0;
  int shared_block_mappings = 0;
  int threads = 0;
};
process_facts read_process_facts();

/// The live children of `parent` whose command name (as ps shows it) is `name`.
std::vector<long> children_named(long parent, const std::string& name);

#if defined(__linux__)
/// True if `target` (a descriptor's link in /proc/<pid>/fd, or a path in /proc/<pid>/maps) is
/// one of the library's shared blocks: a memfd, or the portable build's unlinked shared memory
/// object.
bool names_shared_block(const std::string& target);
#endif

}  // namespace multiproc_test
