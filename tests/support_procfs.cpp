// The POSIX tests' resource facts from Linux's /proc (see support_process_facts.hpp; macOS:
// support_libproc.cpp). Used by every POSIX configuration on Linux, the portable one
// included: the library's portable build must not read /proc, its tests may.
#include <dirent.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "../src/core/forkserver.hpp"
#include "support.hpp"
#include "support_process_facts.hpp"

namespace multiproc_test {

namespace {
int count_entries(const char* directory, bool (*keep)(const char* name)) {
  DIR* dir = ::opendir(directory);
  if (dir == nullptr) return 0;
  int count = 0;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    if (keep == nullptr || keep(entry->d_name)) ++count;
  }
  ::closedir(dir);
  return count - (std::string(directory) == "/proc/self/fd" ? 1 : 0);  // opendir's own fd
}

/// One process's line of /proc/<pid>/stat: its state, parent and command name.
struct stat_line {
  char state = 0;
  long parent = 0;
  std::string name;
};

/// Calls `visit(pid, line)` for every process /proc shows.
template <class Visit>
void for_each_process(Visit visit) {
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return;
  while (dirent* entry = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const auto open = line.find('(');
    const auto close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) continue;
    stat_line parsed;
    parsed.name = line.substr(open + 1, close - open - 1);
    std::istringstream rest(line.substr(close + 2));
    rest >> parsed.state >> parsed.parent;
    visit(pid, parsed);
  }
  ::closedir(proc);
}

/// Children of this process by state, from /proc: the fork server's children count as its
/// own (a leak of the server's is one of the test's), the server itself and its spare (the
/// child it keeps forked ahead, named "mp-spare" until it is given a role) do not: they serve
/// test after test.
void count_children(int& live, int& zombies) {
  live = zombies = 0;
  const long self = static_cast<long>(::getpid());
  const long server = multiproc::detail::forkserver_pid();
  for_each_process([&](long pid, const stat_line& line) {
    if (pid == server) return;
    if (line.parent != self && (server == 0 || line.parent != server)) return;
    if (line.parent == server && line.name == "mp-spare") return;
    if (line.state == 'Z') {
      ++zombies;
    } else {
      ++live;
    }
  });
}

}  // namespace

// What the library's shared blocks look like, both as a descriptor's link and as a mapping's
// path: a memfd (src/posix/shared_block_linux.cpp: memfd_create's names "multiproc-...") is
// "/memfd:multiproc-payload (deleted)"; the portable build's shared memory objects
// (shared_block_portable.cpp), unlinked at birth, are "/dev/shm/mp<pid>.<n>.<salt> (deleted)".
bool names_shared_block(const std::string& target) {
  return target.rfind("/memfd:multiproc", 0) == 0 || target.rfind("/dev/shm/mp", 0) == 0;
}

namespace {

/// This process's descriptors that are the library's shared blocks.
int count_shared_block_descriptors() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  int count = 0;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    char target[256] = {};
    const std::string link = std::string("/proc/self/fd/") + entry->d_name;
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n > 0 && names_shared_block(std::string(target, static_cast<std::size_t>(n)))) ++count;
  }
  ::closedir(dir);
  return count;
}

/// This process's mappings of the library's shared blocks (a block mapped from a peer holds no
/// descriptor: only its mapping shows a leak).
int count_shared_block_mappings() {
  std::ifstream maps("/proc/self/maps");
  int count = 0;
  for (std::string line; std::getline(maps, line);) {
    const auto path = line.find('/');
    if (path != std::string::npos && names_shared_block(line.substr(path))) ++count;
  }
  return count;
}
}  // namespace

std::vector<long> children_named(long parent, const std::string& name) {
  std::vector<long> found;
  for_each_process([&](long pid, const stat_line& line) {
    if (line.parent == parent && line.state != 'Z' && line.name == name) found.push_back(pid);
  });
  return found;
}

process_facts read_process_facts() {
  process_facts facts;
  facts.descriptors = count_entries("/proc/self/fd", nullptr);
  count_children(facts.children, facts.zombies);
  facts.shared_segments = count_entries("/dev/shm", nullptr);
  facts.shared_block_descriptors = count_shared_block_descriptors();
  facts.shared_block_mappings = count_shared_block_mappings();
  facts.threads = count_entries("/proc/self/task", nullptr);
  return facts;
}

std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t total = 0, resident = 0;
  statm >> total >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

bool process_running(long pid) {  // a zombie has ended
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto close = line.rfind(')');
  return close == std::string::npos || line.at(close + 2) != 'Z';
}

}  // namespace multiproc_test
