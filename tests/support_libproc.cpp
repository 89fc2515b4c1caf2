// The POSIX tests' resource facts on macOS, from libproc (see support_process_facts.hpp;
// Linux: support_procfs.cpp). Written for macOS and built only there (tests/CMakeLists.txt,
// APPLE): the Linux machines that develop this project cannot compile it; the workflow's
// macOS job does.
#include <libproc.h>
#include <signal.h>
#include <sys/proc.h>
#include <sys/proc_info.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>
#include <vector>

#include "support.hpp"
#include "support_process_facts.hpp"

namespace multiproc_test {

namespace {

/// A zombie (ended, not reaped) still answers kill(pid, 0); its BSD info says SZOMB, or
/// cannot be read at all once its task is gone.
bool zombie(pid_t pid) {
  proc_bsdshortinfo info{};
  const int got = ::proc_pidinfo(pid, PROC_PIDT_SHORTBSDINFO, 0, &info, sizeof info);
  if (got == static_cast<int>(sizeof info)) return info.pbsi_status == SZOMB;
  return ::kill(pid, 0) == 0;
}

int count_children(int& zombies) {
  zombies = 0;
  // proc_listpids answers in bytes; room for more than there are, since children may start
  // between the two calls.
  const int needed = ::proc_listpids(PROC_PPID_ONLY, static_cast<uint32_t>(::getpid()), nullptr, 0);
  if (needed <= 0) return 0;
  std::vector<pid_t> pids(static_cast<std::size_t>(needed) / sizeof(pid_t) + 64);
  const int got = ::proc_listpids(PROC_PPID_ONLY, static_cast<uint32_t>(::getpid()), pids.data(),
                                  static_cast<int>(pids.size() * sizeof(pid_t)));
  int live = 0;
  for (int i = 0; i < got / static_cast<int>(sizeof(pid_t)); ++i) {
    if (pids[static_cast<std::size_t>(i)] <= 0) continue;
    if (zombie(pids[static_cast<std::size_t>(i)])) {
      ++zombies;
    } else {
      ++live;
    }
  }
  return live;
}

int count_descriptors() {
  const int needed = ::proc_pidinfo(::getpid(), PROC_PIDLISTFDS, 0, nullptr, 0);
  if (needed <= 0) return 0;
  std::vector<proc_fdinfo> fds(static_cast<std::size_t>(needed) / sizeof(proc_fdinfo) + 16);
  const int got = ::proc_pidinfo(::getpid(), PROC_PIDLISTFDS, 0, fds.data(),
                                 static_cast<int>(fds.size() * sizeof(proc_fdinfo)));
  return got <= 0 ? 0 : got / static_cast<int>(sizeof(proc_fdinfo));
}

bool task_info(proc_taskinfo& info) {
  return ::proc_pidinfo(::getpid(), PROC_PIDTASKINFO, 0, &info, sizeof info) ==
         static_cast<int>(sizeof info);
}

}  // namespace

std::vector<long> children_named(long parent, const std::string& name) {
  std::vector<long> found;
  const int needed = ::proc_listpids(PROC_PPID_ONLY, static_cast<uint32_t>(parent), nullptr, 0);
  if (needed <= 0) return found;
  std::vector<pid_t> pids(static_cast<std::size_t>(needed) / sizeof(pid_t) + 64);
  const int got = ::proc_listpids(PROC_PPID_ONLY, static_cast<uint32_t>(parent), pids.data(),
                                  static_cast<int>(pids.size() * sizeof(pid_t)));
  for (int i = 0; i < got / static_cast<int>(sizeof(pid_t)); ++i) {
    const pid_t pid = pids[static_cast<std::size_t>(i)];
    if (pid <= 0 || zombie(pid)) continue;
    char own[256] = {};
    if (::proc_name(pid, own, sizeof own) > 0 && name == own) found.push_back(pid);
  }
  return found;
}

process_facts read_process_facts() {
  process_facts facts;
  facts.descriptors = count_descriptors();
  facts.children = count_children(facts.zombies);
  // macOS cannot list named shared memory; the library unlinks every name at once
  // (src/posix/shared_block_portable.cpp). Its blocks are not counted here yet (that would be
  // proc_pidinfo's PROC_PIDLISTFDS, PSHM descriptors): on macOS the leak checks see
  // descriptors, children and threads, and the portable configuration on Linux checks blocks.
  facts.shared_segments = 0;
  facts.shared_block_descriptors = 0;
  facts.shared_block_mappings = 0;
  proc_taskinfo info{};
  facts.threads = task_info(info) ? info.pti_threadnum : 0;
  return facts;
}

std::size_t resident_bytes() {
  proc_taskinfo info{};
  return task_info(info) ? static_cast<std::size_t>(info.pti_resident_size) : 0;
}

bool process_running(long pid) {
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return false;
  return !zombie(static_cast<pid_t>(pid));
}

}  // namespace multiproc_test
