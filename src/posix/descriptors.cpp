// The POSIX descriptor registry (see descriptors.hpp).
#include "descriptors.hpp"

#include <unistd.h>

#include <atomic>
#include <span>

namespace multiproc::detail::os::posix {

namespace {
// Why a table of atomics and not a std::set under a mutex: the forked child walks it between
// fork() and exec/_exit, where only async-signal-safe work is allowed (no allocation, no lock
// another thread might have held), and it must be usable during static initialisation.
// 16384 slots cover any realistic number of pools, processes and queues; a linear scan costs
// about as much as the system call it accompanies.
constexpr int descriptor_slots = 16384;
// A slot holds fd + 1, plus travelling_bit for a travelling one; 0 = free.
constexpr int travelling_bit = 1 << 30;
std::atomic<int> registered[descriptor_slots];  // constant-initialised
// Slots past this one have never been used, so scans stop here. Without it a forked child's
// clean-up read all 64 KiB of the table: every page the parent never touched cost the child a
// page fault (about 15 per start of a process, a tenth of the start's time).
std::atomic<int> slots_in_use{0};

/// The slots that may be in use: [registered, registered + slots_in_use).
std::span<std::atomic<int>> used_slots() noexcept {
  return {registered, static_cast<std::size_t>(slots_in_use.load())};
}
// The epochs: objects stamp the one of their kind when they open a descriptor, and close it
// only in the same epoch. After a fork clean-up the child's old objects (inherited with the
// memory) would otherwise close numbers the child has since reused -- for its own files, or
// for the library's new descriptors.
std::atomic<std::uint32_t> internal_epoch{0};
std::atomic<std::uint32_t> travelling_epoch{0};
// A stamp: the epoch, with the top bit saying which kind.
constexpr std::uint32_t travelling_stamp = std::uint32_t{1} << 31;

void unregister_descriptor(int fd) noexcept {
  for (auto& slot : used_slots()) {
    const int value = slot.load();
    if (value != 0 && (value & ~travelling_bit) == fd + 1) {
      int expected = value;
      if (slot.compare_exchange_strong(expected, 0)) return;
    }
  }
}

bool kept(int fd, std::span<const native_handle> keep) noexcept {
  for (const native_handle each : keep) {
    if (each == fd) return true;
  }
  return false;
}
}  // namespace

void register_descriptor(int fd, handle_kind kind) noexcept {
  const int value = (fd + 1) | (kind == handle_kind::travelling ? travelling_bit : 0);
  for (int index = 0; index < descriptor_slots; ++index) {
    if (registered[index].load() != 0) continue;
    // The mark covers the slot before the slot holds anything: a scan never misses it.
    int used = slots_in_use.load();
    while (used <= index && !slots_in_use.compare_exchange_weak(used, index + 1)) {
    }
    int expected = 0;
    if (registered[index].compare_exchange_strong(expected, value)) return;
  }
}

std::uint32_t stamp_of(handle_kind kind) noexcept {
  return kind == handle_kind::travelling ? (travelling_epoch.load() | travelling_stamp)
                                         : internal_epoch.load();
}

void close_registered(int fd, std::uint32_t stamp) noexcept {
  // Under the lock: a fork between unregistering and closing would hand the child a
  // descriptor it does not know to close (a sibling's pipe end, hiding that sibling's death).
  const creating_descriptors guard;
  const bool travelling = (stamp & travelling_stamp) != 0;
  if (stamp != stamp_of(travelling ? handle_kind::travelling : handle_kind::internal)) return;
  unregister_descriptor(fd);
  ::close(fd);
}

void close_registered_descriptors(std::span<const native_handle> keep,
                                  bool travelling_too) noexcept {
  // Runs in a forked child before anything else: closing a sibling worker's channel here is
  // what lets the parent see that sibling's end of stream when the sibling dies (a copy held
  // by this child would keep it open).
  internal_epoch.fetch_add(1);
  if (travelling_too) travelling_epoch.fetch_add(1);
  for (auto& slot : used_slots()) {
    const int value = slot.load();
    if (value == 0) continue;
    if ((value & travelling_bit) != 0 && !travelling_too) continue;
    const int fd = (value & ~travelling_bit) - 1;
    if (kept(fd, keep)) continue;
    ::close(fd);
    slot.store(0);
  }
}

std::shared_mutex& descriptor_creation_mutex() {
  static std::shared_mutex mutex;
  return mutex;
}

}  // namespace multiproc::detail::os::posix
