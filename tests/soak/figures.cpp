// Reads the soak's figures from /proc (Linux).
#include "figures.hpp"

#include <dirent.h>
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "../../src/core/forkserver.hpp"

namespace soak {

namespace {

/// Entries of a directory, less "." and ".." (and opendir's own descriptor in /proc/self/fd).
long count_entries(const char* directory) {
  DIR* dir = ::opendir(directory);
  if (dir == nullptr) return 0;
  long count = 0;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count - (std::string(directory) == "/proc/self/fd" ? 1 : 0);
}

/// A memfd shows as "/memfd:<name> (deleted)" both as a descriptor's link and as a mapping's
/// path; a POSIX named segment as "/dev/shm/<name>".
bool is_shared_block(const std::string& path) {
  return path.rfind("/memfd:", 0) == 0 || path.rfind("/dev/shm/", 0) == 0;
}

long count_shared_descriptors() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  long count = 0;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    char target[512] = {};
    const std::string link = std::string("/proc/self/fd/") + entry->d_name;
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n > 0 && is_shared_block(std::string(target, static_cast<std::size_t>(n)))) ++count;
  }
  ::closedir(dir);
  return count;
}

void count_maps(long& all, long& shared) {
  all = shared = 0;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    ++all;
    const auto path = line.find('/');
    if (path != std::string::npos && is_shared_block(line.substr(path))) ++shared;
  }
}

/// Calls `visit(pid, state)` for each process whose parent is `parent`.
template <class Visit>
void each_child_of(long parent, Visit visit) {
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return;
  while (dirent* entry = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const auto close = line.rfind(')');
    if (close == std::string::npos || close + 2 >= line.size()) continue;
    std::istringstream rest(line.substr(close + 2));
    char state = 0;
    long ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) visit(pid, state);
  }
  ::closedir(proc);
}

/// Children of this process by state; the fork server's children count as this process's
/// own (a worker it forked for us and never reaped is our leak), the server itself does not
/// (it lives as long as this process, by design).
void count_children(long& live, long& zombies) {
  live = zombies = 0;
  const long server = multiproc::detail::forkserver_pid();
  const auto tally = [&](long pid, char state) {
    if (pid == server) return;
    ++(state == 'Z' ? zombies : live);
  };
  each_child_of(static_cast<long>(::getpid()), tally);
  if (server != 0) each_child_of(server, tally);
}

long resident_kib() {
  std::ifstream statm("/proc/self/statm");
  long total = 0, resident = 0;
  statm >> total >> resident;
  return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

}  // namespace

void kill_children() {
  each_child_of(static_cast<long>(::getpid()),
                [](long pid, char) { ::kill(static_cast<pid_t>(pid), SIGKILL); });
}

const char* name_of(figure f) {
  switch (f) {
    case figure::descriptors:
      return "descriptors";
    case figure::threads:
      return "threads";
    case figure::children:
      return "live children";
    case figure::zombies:
      return "zombies";
    case figure::mappings:
      return "mappings";
    case figure::shared_mappings:
      return "memfd/shm mappings";
    case figure::shared_descriptors:
      return "memfd/shm descriptors";
    case figure::dev_shm_entries:
      return "/dev/shm entries";
    case figure::rss_kib:
      return "RSS KiB";
    case figure::heap_in_use_kib:
      return "heap in use KiB";
    case figure::count_:
      break;
  }
  return "?";
}

figures measure() {
  ::malloc_trim(0);
  figures now{};
  auto at = [&](figure f) -> long& { return now[static_cast<std::size_t>(f)]; };
  at(figure::descriptors) =
      count_entries("/proc/self/fd") - multiproc::detail::forkserver_descriptors();
  at(figure::threads) = count_entries("/proc/self/task");
  count_children(at(figure::children), at(figure::zombies));
  count_maps(at(figure::mappings), at(figure::shared_mappings));
  at(figure::shared_descriptors) = count_shared_descriptors();
  at(figure::dev_shm_entries) = count_entries("/dev/shm");
  at(figure::rss_kib) = resident_kib();
  const struct mallinfo2 heap = ::mallinfo2();
  at(figure::heap_in_use_kib) = static_cast<long>((heap.uordblks + heap.hblkhd) / 1024);
  return now;
}

long allowance(figure f) {
  switch (f) {
    case figure::mappings:
      return 64;  // arenas and thread stacks come and go with the pools' threads
    case figure::rss_kib:
      return 96 * 1024;  // a few payloads' worth: a leak of one per operation passes it fast
    case figure::heap_in_use_kib:
      return 16 * 1024;  // nothing is held between episodes: a leaked payload (8+ MiB) shows
    case figure::dev_shm_entries:
      return -1;  // anyone's (other programs' come and go): reported only; a segment of ours
                  // would show in the mappings or descriptors, which are bounded
    default:
      return 0;
  }
}

figure first_breach(const figures& baseline, const figures& now) {
  for (std::size_t i = 0; i < figure_count; ++i) {
    const long allowed = allowance(static_cast<figure>(i));
    if (allowed >= 0 && now[i] > baseline[i] + allowed) return static_cast<figure>(i);
  }
  return figure::count_;
}

}  // namespace soak
