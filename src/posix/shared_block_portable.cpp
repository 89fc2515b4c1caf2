// Shared blocks with portable POSIX only (macOS, the BSDs; MULTIPROC_POSIX_PORTABLE on Linux).
// Every block -- a shared object's (mp::queue, mp::pipe, mp::shared_memory...), a large
// payload's, the pool's claim ledger -- is shm_open'd under a random name that is unlinked at
// once, so only descriptors name it and the system frees it with the last of them. A peer
// cannot open the sender's descriptor (Linux does that through /proc/<pid>/fd; macOS has no
// such thing), so the descriptor itself travels: attached to the channel write that carries
// the frame naming the block (SCM_RIGHTS), and taken by the reader in frame order. The frame
// names the block by its inode number, which the reader checks.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "../os/shared_block.hpp"
#include "descriptors.hpp"
#include "internal.hpp"
#include "platform.hpp"

namespace multiproc::detail::os {

namespace {
char* map_descriptor(int fd, std::size_t size) {
  void* data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) throw posix::last_error("multiproc: mapping a shared object");
  return static_cast<char*>(data);
}

/// An unnamed shared memory object: shm_open'd under a fresh name, unlinked at once (a crash
/// in between is the only way to leave a name behind). Close-on-exec, registered as `kind`.
/// The caller holds the descriptor creation lock.
int open_unnamed_locked(handle_kind kind) {
  static std::atomic<unsigned> serial{0};
  for (int attempt = 0; attempt < 64; ++attempt) {
    // The name must only be new (O_EXCL says if it is not, and the loop tries another), so
    // the salt is the clock mixed with this call's address: no descriptor is needed for it,
    // and a process at its descriptor limit fails in shm_open with EMFILE, which says why.
    std::uint64_t salt =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
        (reinterpret_cast<std::uintptr_t>(&attempt) << 16);
    salt *= 0x9e3779b97f4a7c15ULL;  // spreads the clock's low bits into the ones kept below
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
    posix::register_descriptor(fd, kind);
    return fd;
  }
  throw std::system_error(std::make_error_code(std::errc::file_exists),
                          "multiproc: creating a shared object");
}

/// A new unnamed object of `size` bytes. Sparse by nature on Linux and macOS alike: ftruncate
/// allocates nothing. macOS sizes a shared memory object once only, which is all this does.
owned_handle sized_unnamed(std::size_t size, handle_kind kind) {
  owned_handle handle;
  {
    const posix::creating_descriptors guard;
    handle = owned_handle(open_unnamed_locked(kind), kind);
  }
  if (::ftruncate(static_cast<int>(handle.get()), static_cast<off_t>(size)) != 0) {
    throw posix::last_error("multiproc: sizing a shared object");
  }
  return handle;
}

/// The token a block travels with: its object's identity (inode number), so the receiver can
/// tell that the descriptor it took is the block the frame names.
std::uint64_t identity_of(const owned_handle& handle) {
  struct stat facts {};
  if (::fstat(static_cast<int>(handle.get()), &facts) != 0) {
    throw posix::last_error("multiproc: naming a shared block");
  }
  return static_cast<std::uint64_t>(facts.st_ino);
}

/// The descriptor of the block a frame names (`token`): the next one that arrived on `from`.
/// Throws std::runtime_error if none came or it is another block (the channel is then out of
/// step: a broken peer, or descriptors the kernel dropped).
owned_handle take_arrived(channel& from, std::uint64_t token) {
  owned_handle handle = from.take_attached();
  if (!handle) throw std::runtime_error("multiproc: a frame names a shared block that never came");
  if (identity_of(handle) != token) {
    throw std::runtime_error(
        "multiproc: the shared block that came is not the one the frame names");
  }
  return handle;
}
}  // namespace

bool shared_block::supported() noexcept {
  return true;
}

shared_block shared_block::create(std::size_t size) {
  // A payload block or the claim ledger: internal, so a forked child closes it.
  shared_block block;
  block.handle_ = sized_unnamed(size, handle_kind::internal);
  block.data_ = map_descriptor(static_cast<int>(block.handle_.get()), size);
  block.size_ = size;
  return block;
}

void shared_block::grow(std::size_t size) {
  if (size <= size_) return;
  // macOS sizes a shared memory object once only: the contents move to a new one (the codec
  // doubles the block as it fills, so the moves cost less than one more copy in all).
  shared_block bigger = create(size);
  std::memcpy(bigger.data_, data_, size_);
  *this = std::move(bigger);
}

void shared_block::write(std::size_t offset, const void* bytes, std::size_t count) {
  std::memcpy(data_ + offset, bytes, count);
}

void shared_block::discard(std::size_t, std::size_t) noexcept {
  // No portable call gives back part of a shared memory object: its pages go with the block.
}

void shared_block::prefetch(std::size_t, std::size_t) noexcept {}

std::uint64_t shared_block::export_to_child(const child&, std::vector<native_handle>& attached) {
  const std::uint64_t token = identity_of(handle_);
  attached.push_back(handle_.get());
  return token;
}

std::uint64_t shared_block::export_to_parent(std::vector<native_handle>& attached) {
  const std::uint64_t token = identity_of(handle_);
  attached.push_back(handle_.get());
  return token;
}

shared_block shared_block::create_shared(std::size_t size, bool) {
  shared_block block;
  block.handle_ = sized_unnamed(size, handle_kind::travelling);
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

shared_block shared_block::open_from_parent(std::uint64_t token, std::size_t size, channel& from) {
  shared_block block = map_received(take_arrived(from, token), size, false);
  block.handle_.reset();  // the mapping keeps the memory; no fork of this process inherits it
  return block;
}

shared_block shared_block::open_from_child(const child&, std::uint64_t token, std::size_t size,
                                           channel& from) {
  shared_block block = map_received(take_arrived(from, token), size, false);
  block.handle_.reset();
  return block;
}

void shared_block::forget_from_parent(std::uint64_t, channel& from) noexcept {
  from.take_attached();  // closed as it goes: the frame after this one finds its own
}

}  // namespace multiproc::detail::os
