// Shared blocks on POSIX. Linux: an anonymous memfd, opened by the peer through
// /proc/<pid>/fd/<n> while the sender still holds it, so no name exists that a crash could
// leak. Elsewhere shared blocks are not offered and large payloads use the channel.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "../backend.hpp"
#include "internal.hpp"

namespace multiproc::detail::os {

void shared_block::release() noexcept {
  if (data_ != nullptr) ::munmap(data_, size_);
  if (handle_ >= 0) {
    posix::close_registered(static_cast<int>(handle_), generation_);
  }
  data_ = nullptr;
  size_ = 0;
  handle_ = invalid_handle;
}

#if defined(__linux__)

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

/// Maps the block a peer holds as descriptor `token`, while it still holds it.
char* map_peer(long pid, std::uint64_t token, std::size_t size, bool populate) {
  const std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(token);
  const posix::creating_descriptors guard;  // open to close: no fork may inherit it
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw posix::last_error("multiproc: opening a peer's shared block");
  char* data = nullptr;
  try {
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
  shared_block block;
  int fd = -1;
  {
    const posix::creating_descriptors guard;
    fd = ::memfd_create("multiproc-payload", MFD_CLOEXEC);
    if (fd < 0) throw posix::last_error("multiproc: creating a shared block");
    posix::register_descriptor(fd);
  }
  block.handle_ = fd;
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    throw posix::last_error("multiproc: sizing a shared block");
  }
  block.data_ = map_descriptor(fd, size, false);
  block.size_ = size;
  return block;
}

void shared_block::write(std::size_t offset, const void* bytes, std::size_t count) {
  const char* from = static_cast<const char*>(bytes);
  while (count > 0) {
    const ssize_t n = ::pwrite(static_cast<int>(handle_), from, count, static_cast<off_t>(offset));
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

void shared_block::grow(std::size_t size) {
  if (size <= size_) return;
  // The memfd grows in place; the mapping moves if it must. Nothing is copied.
  if (::ftruncate(static_cast<int>(handle_), static_cast<off_t>(size)) != 0) {
    throw posix::last_error("multiproc: growing a shared block");
  }
  void* moved = ::mremap(data_, size_, size, MREMAP_MAYMOVE);
  if (moved == MAP_FAILED) throw posix::last_error("multiproc: growing a shared block");
  data_ = static_cast<char*>(moved);
  size_ = size;
}

std::uint64_t shared_block::export_to_child(const child&) {
  return static_cast<std::uint64_t>(handle_);
}
std::uint64_t shared_block::export_to_parent() {
  return static_cast<std::uint64_t>(handle_);
}

shared_block shared_block::open_from_parent(std::uint64_t token, std::size_t size) {
  shared_block block;
  block.data_ = map_peer(static_cast<long>(::getppid()), token, size, false);
  block.size_ = size;
  return block;
}

shared_block shared_block::open_from_child(const child& sender, std::uint64_t token,
                                           std::size_t size) {
  shared_block block;
  block.data_ = map_peer(sender.pid(), token, size, true);
  block.size_ = size;
  return block;
}

#else

bool shared_block::supported() noexcept {
  return false;
}
shared_block shared_block::create(std::size_t) {
  throw std::system_error(std::make_error_code(std::errc::function_not_supported),
                          "multiproc: shared blocks");
}
void shared_block::grow(std::size_t) {
  create(0);
}
void shared_block::write(std::size_t offset, const void* bytes, std::size_t count) {
  std::memcpy(data_ + offset, bytes, count);
}
void shared_block::discard(std::size_t, std::size_t) noexcept {}
void shared_block::prefetch(std::size_t, std::size_t) noexcept {}
std::uint64_t shared_block::export_to_child(const child&) {
  return 0;
}
std::uint64_t shared_block::export_to_parent() {
  return 0;
}
shared_block shared_block::open_from_parent(std::uint64_t, std::size_t) {
  return create(0);
}
shared_block shared_block::open_from_child(const child&, std::uint64_t, std::size_t) {
  return create(0);
}

#endif

}  // namespace multiproc::detail::os
