// Shared blocks with portable POSIX only (macOS, the BSDs; MULTIPROC_POSIX_PORTABLE on Linux).
// A shared object's block (mp::queue, mp::pipe, mp::shared_memory...) is shm_open'd under a
// random name that is unlinked at once, so only descriptors name it and the system frees it
// with the last of them; it reaches other processes by descriptor (fork inheritance, spawn's
// inherited descriptors, descriptor passing), as on Linux. Payload blocks are not offered:
// the peer would have to open the sender's descriptor, which Linux does through /proc/<pid>/fd
// and macOS cannot, so large payloads travel through the channel
// (src/core/protocol/codec.cpp checks shared_block::supported()), and the pool's claim ledger
// is not made (one task per worker at a time).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "../os/shared_block.hpp"
#include "descriptors.hpp"
#include "internal.hpp"
#include "platform.hpp"

namespace multiproc::detail::os {

namespace {
[[noreturn]] void unsupported() {
  throw std::system_error(std::make_error_code(std::errc::function_not_supported),
                          "multiproc: shared blocks");
}

char* map_descriptor(int fd, std::size_t size) {
  void* data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) throw posix::last_error("multiproc: mapping a shared object");
  return static_cast<char*>(data);
}

/// An unnamed shared memory object: shm_open'd under a fresh name, unlinked at once (a crash
/// in between is the only way to leave a name behind). Close-on-exec, registered. The caller
/// holds the descriptor creation lock.
int open_unnamed_locked() {
  static std::atomic<unsigned> serial{0};
  for (int attempt = 0; attempt < 64; ++attempt) {
    unsigned char noise[8];
    posix::platform::fill_random(noise, sizeof noise);
    std::uint64_t salt = 0;
    std::memcpy(&salt, noise, sizeof salt);
    // macOS limits names to 31 characters (PSHMNAMLEN).
    char name[32];
    std::snprintf(name, sizeof name, "/mp%ld.%u.%llx", static_cast<long>(::getpid()) % 100000,
                  serial.fetch_add(1) % 10000, static_cast<unsigned long long>(salt >> 28));
    const int fd = ::shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      throw posix::last_error("multiproc: creating a shared object");
    }
    ::shm_unlink(name);
    posix::platform::set_cloexec(fd);  // shm_open sets it by POSIX; cheap to be sure
    posix::register_descriptor(fd, handle_kind::travelling);
    return fd;
  }
  throw std::system_error(std::make_error_code(std::errc::file_exists),
                          "multiproc: creating a shared object");
}
}  // namespace

bool shared_block::supported() noexcept {
  return false;
}
shared_block shared_block::create(std::size_t) {
  unsupported();
}
void shared_block::grow(std::size_t) {
  unsupported();
}
void shared_block::discard(std::size_t, std::size_t) noexcept {}
void shared_block::prefetch(std::size_t, std::size_t) noexcept {}
std::uint64_t shared_block::export_to_child(const child&) {
  unsupported();
}
shared_block shared_block::create_shared(std::size_t size, bool) {
  // Sparse by nature on Linux and macOS alike: ftruncate allocates nothing. macOS sizes a
  // shared memory object once only, which is all this does.
  shared_block block;
  {
    const posix::creating_descriptors guard;
    block.handle_ = owned_handle(open_unnamed_locked(), handle_kind::travelling);
  }
  if (::ftruncate(static_cast<int>(block.handle_.get()), static_cast<off_t>(size)) != 0) {
    throw posix::last_error("multiproc: sizing a shared object");
  }
  block.data_ = map_descriptor(static_cast<int>(block.handle_.get()), size);
  block.size_ = size;
  return block;
}
shared_block shared_block::map_received(owned_handle handle, std::size_t size, bool) {
  shared_block block;
  block.handle_ = std::move(handle);
  struct stat info {};
  // A peer's claim is checked against the real size: mapping past it would fault later.
  if (::fstat(static_cast<int>(block.handle_.get()), &info) != 0 ||
      static_cast<std::size_t>(info.st_size) < size) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            "multiproc: a shared object is smaller than it claims");
  }
  block.data_ = map_descriptor(static_cast<int>(block.handle_.get()), size);
  block.size_ = size;
  return block;
}
void shared_block::make_usable(std::size_t, std::size_t) {}
std::uint64_t shared_block::export_to_parent() {
  unsupported();
}
shared_block shared_block::open_from_parent(std::uint64_t, std::size_t) {
  unsupported();
}
shared_block shared_block::open_from_child(const child&, std::uint64_t, std::size_t) {
  unsupported();
}

}  // namespace multiproc::detail::os
