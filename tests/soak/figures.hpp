// The soak's figures: what a leak in a long-running program would show, read from /proc
// (Linux), and the bounds each must keep relative to the baseline taken after warm-up.
#pragma once

#include <array>
#include <cstddef>
#include <string>

namespace soak {

enum class figure : std::size_t {
  descriptors,         // /proc/self/fd, less the fork server's (its link and pidfd)
  threads,             // /proc/self/task
  children,            // live children (the fork server's children count; the server not)
  zombies,             // children in state Z
  mappings,            // lines of /proc/self/maps
  shared_mappings,     // mappings of memfds (the library's blocks) and of /dev/shm files
  shared_descriptors,  // descriptors that are memfds or /dev/shm files
  dev_shm_entries,     // files in /dev/shm of anyone (a named segment would show here)
  rss_kib,             // resident memory, after malloc_trim (free heap given back)
  heap_in_use_kib,     // mallinfo2().uordblks + hblkhd: bytes malloc has handed out
  count_
};
constexpr std::size_t figure_count = static_cast<std::size_t>(figure::count_);

using figures = std::array<long, figure_count>;

const char* name_of(figure f);
/// The figures now. Gives free heap back to the system first (malloc_trim), so RSS shows
/// memory that is still in use, not memory glibc keeps for later.
figures measure();

/// How far a figure may be above its baseline at a check; negative: reported, not bounded.
/// Countable resources (descriptors, threads, children, zombies, shared blocks) must come back
/// exactly: at a check no pool or process exists, so anything above the baseline is held by
/// nobody. Mappings and memory may move a little (malloc arenas of the supervisor threads).
long allowance(figure f);

/// SIGKILLs every child of this process (on a hang, before the soak gives up: a child waiting
/// for ever must not outlive the run; pool workers would die with it anyway).
void kill_children();

/// The first figure above baseline + allowance, or figure::count_ if none.
figure first_breach(const figures& baseline, const figures& now);

}  // namespace soak
