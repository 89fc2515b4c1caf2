// The POSIX descriptor registry (see descriptors.hpp).
#include "descriptors.hpp"

#include <unistd.h>

#include <atomic>

namespace multiproc::detail::os::posix {

namespace {
// Why a table of atomics and not a std::set under a mutex: the forked child walks it between
// fork() and exec/_exit, where only async-signal-safe work is allowed (no allocation, no lock
// another thread might have held), and it must be usable during static initialisation.
// 16384 slots cover any realistic number of pools and processes; a linear scan costs about
// as much as the system call it accompanies.
constexpr int descriptor_slots = 16384;
std::atomic<int> registered[descriptor_slots];  // fd + 1; 0 = free (constant-initialised)
// The epoch: objects stamp it when they open a descriptor, and close it only in the same
// epoch. After a fork clean-up the child's old objects (inherited with the memory) would
// otherwise close numbers the child has since reused -- for its own files, or for the
// library's new channels.
std::atomic<unsigned> current_epoch{0};

void unregister_descriptor(int fd) noexcept {
  for (auto& slot : registered) {
    int expected = fd + 1;
    if (slot.compare_exchange_strong(expected, 0)) return;
  }
}
}  // namespace

void register_descriptor(int fd) noexcept {
  for (auto& slot : registered) {
    int expected = 0;
    if (slot.compare_exchange_strong(expected, fd + 1)) return;
  }
}

void close_registered(int fd, unsigned opened_in) noexcept {
  // Under the lock: a fork between unregistering and closing would hand the child a
  // descriptor it does not know to close (a sibling's pipe end, hiding that sibling's death).
  const creating_descriptors guard;
  if (opened_in != current_epoch.load()) return;
  unregister_descriptor(fd);
  ::close(fd);
}

void close_registered_descriptors(int keep_a, int keep_b) noexcept {
  // Runs in a forked child before anything else: closing a sibling worker's pipe end here is
  // what lets the parent see that sibling's end of stream when the sibling dies (a copy held
  // by this child would keep the pipe open).
  current_epoch.fetch_add(1);
  for (auto& slot : registered) {
    const int fd = slot.load() - 1;
    if (fd < 0 || fd == keep_a || fd == keep_b) continue;
    ::close(fd);
    slot.store(0);
  }
}

unsigned epoch() noexcept {
  return current_epoch.load();
}

std::shared_mutex& descriptor_creation_mutex() {
  static std::shared_mutex mutex;
  return mutex;
}
}  // namespace multiproc::detail::os::posix
