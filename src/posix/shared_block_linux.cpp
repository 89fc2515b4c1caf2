// Shared blocks on Linux: an anonymous memfd, opened by the peer through /proc/<pid>/fd/<n>
// while the sender still holds it, so no name exists that a crash could leak.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../os/shared_block.hpp"
#include "descriptors.hpp"
#include "internal.hpp"

namespace multiproc::detail::os {

namespace {
/// `populate`: fault the pages in at once (one pass instead of a fault per 4 KiB) -- for a
/// peer's block, whose pages exist and are read next. A new block is not populated: it is
/// filled through write(), never through the mapping.
char* map_descriptor(int fd, std::size_t size, bool populate) {
  const int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  void* data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (data == MAP_FAILED) throw posix::last_error("multiproc: mapping a shared block");
  return static_cast<char*>(data);
}

/// Maps the block a peer holds as descriptor `token`, while it still holds it. Opening
/// /proc/<pid>/fd/<n> of a memfd opens the same memory (not a copy), and is allowed only to a
/// process that may ptrace-read the peer: its parent or child of the same user, here. No
/// descriptor passing is needed, so the channel stays a plain pipe.
char* map_peer(long pid, std::uint64_t token, std::size_t size, bool populate) {
  const std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(token);
  const posix::creating_descriptors guard;  // open to close: no fork may inherit it
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw posix::last_error("multiproc: opening a peer's shared block");
  char* data = nullptr;
  try {
    // The size is the peer's claim: mapped beyond the memfd's end, the first read past it
    // would be SIGBUS in this process.
    struct stat facts {};
    if (::fstat(fd, &facts) != 0)
      throw posix::last_error("multiproc: sizing a peer's shared block");
    if (static_cast<std::uint64_t>(facts.st_size) < size) {
      throw std::runtime_error("multiproc: a peer claims " + std::to_string(size) +
                               " bytes of a shared block that has " +
                               std::to_string(facts.st_size));
    }
    data = map_descriptor(fd, size, populate);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);  // the mapping keeps the memory alive
  return data;
}
}  // namespace

bool shared_block::supported() noexcept {
  return true;
}

shared_block shared_block::create(std::size_t size) {
  // A memfd has no name in any file system: when the last descriptor and mapping go (however
  // the processes end), the kernel frees it. Nothing like /dev/shm can be left behind.
  shared_block block;
  {
    const posix::creating_descriptors guard;
    const int fd = ::memfd_create("multiproc-payload", MFD_CLOEXEC);
    if (fd < 0) throw posix::last_error("multiproc: creating a shared block");
    posix::register_descriptor(fd);
    block.handle_ = owned_handle(fd);
  }
  if (::ftruncate(static_cast<int>(block.handle_.get()), static_cast<off_t>(size)) != 0) {
    throw posix::last_error("multiproc: sizing a shared block");
  }
  block.data_ = map_descriptor(static_cast<int>(block.handle_.get()), size, false);
  block.size_ = size;
  return block;
}

void shared_block::grow(std::size_t size) {
  if (size <= size_) return;
  // The memfd grows in place; the mapping moves if it must. Nothing is copied.
  if (::ftruncate(static_cast<int>(handle_.get()), static_cast<off_t>(size)) != 0) {
    throw posix::last_error("multiproc: growing a shared block");
  }
  void* moved = ::mremap(data_, size_, size, MREMAP_MAYMOVE);
  if (moved == MAP_FAILED) throw posix::last_error("multiproc: growing a shared block");
  data_ = static_cast<char*>(moved);
  size_ = size;
}

void shared_block::write(std::size_t offset, const void* bytes, std::size_t count) {
  const char* from = static_cast<const char*>(bytes);
  while (count > 0) {
    const ssize_t n =
        ::pwrite(static_cast<int>(handle_.get()), from, count, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw posix::last_error("multiproc: writing a shared block");
    }
    from += n;
    offset += static_cast<std::size_t>(n);
    count -= static_cast<std::size_t>(n);
  }
}

void shared_block::discard(std::size_t offset, std::size_t count) noexcept {
  if (data_ == nullptr || offset >= size_) return;
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t end = offset + std::min(count, size_ - offset);
  const std::size_t first = (offset + page - 1) / page * page;
  // The mapping's last page may be partial: reaching the block's end discards it whole.
  const std::size_t last = end == size_ ? (size_ + page - 1) / page * page : end / page * page;
  if (last <= first) return;
  ::madvise(data_ + first, last - first, MADV_REMOVE);
}

void shared_block::prefetch(std::size_t offset, std::size_t count) noexcept {
#if defined(MADV_POPULATE_READ)
  constexpr int populate_read = MADV_POPULATE_READ;
#else
  constexpr int populate_read = 22;  // Linux 5.14; older kernels refuse it with EINVAL
#endif
  if (data_ == nullptr || offset >= size_) return;
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t first = offset / page * page;
  const std::size_t end = offset + std::min(count, size_ - offset);
  ::madvise(data_ + first, end - first, populate_read);
}

shared_block shared_block::create_shared(std::size_t size, bool) {
  // A memfd is sparse by nature: ftruncate allocates nothing, pages come as they are written.
  shared_block block;
  {
    const posix::creating_descriptors guard;
    const int fd = ::memfd_create("multiproc-shared", MFD_CLOEXEC);
    if (fd < 0) throw posix::last_error("multiproc: creating a shared object");
    posix::register_descriptor(fd, handle_kind::travelling);
    block.handle_ = owned_handle(fd, handle_kind::travelling);
  }
  if (::ftruncate(static_cast<int>(block.handle_.get()), static_cast<off_t>(size)) != 0) {
    throw posix::last_error("multiproc: sizing a shared object");
  }
  block.data_ = map_descriptor(static_cast<int>(block.handle_.get()), size, false);
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
  block.data_ = map_descriptor(static_cast<int>(block.handle_.get()), size, false);
  block.size_ = size;
  return block;
}

void shared_block::make_usable(std::size_t, std::size_t) {}

std::uint64_t shared_block::export_to_child(const child&, std::vector<native_handle>&) {
  return static_cast<std::uint64_t>(handle_.get());
}
std::uint64_t shared_block::export_to_parent(std::vector<native_handle>&) {
  return static_cast<std::uint64_t>(handle_.get());
}

shared_block shared_block::open_from_parent(std::uint64_t token, std::size_t size, channel&) {
  shared_block block;
  block.data_ = map_peer(posix::logical_parent(), token, size, false);
  block.size_ = size;
  return block;
}

shared_block shared_block::open_from_child(const child& sender, std::uint64_t token,
                                           std::size_t size, channel&) {
  shared_block block;
  block.data_ = map_peer(sender.pid(), token, size, true);
  block.size_ = size;
  return block;
}

void shared_block::forget_from_parent(std::uint64_t, channel&) noexcept {
  // The token names the parent's own descriptor: nothing was handed to this process.
}

}  // namespace multiproc::detail::os
