// The backend seam, part 8: shared blocks, the unnamed shared memory large payloads travel in.
// Twins: src/posix/shared_block.cpp (with shared_block_linux.cpp or shared_block_portable.cpp)
// and src/win32/shared_block.cpp.
#pragma once

#include <atomic>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "channel.hpp"
#include "child.hpp"
#include "handle.hpp"

namespace multiproc::detail::os {

/// A read-write shared mapping, freed by the OS once no process maps or holds it, so a
/// process dying at any point leaks nothing (memfd on Linux, a section on Windows, a
/// shm_open'd object unlinked at birth in portable POSIX). Nothing is named: a peer opens it
/// through the sender's handle, or receives the handle itself. Move-only.
class shared_block {
 public:
  shared_block() = default;
  shared_block(shared_block&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        handle_(std::move(other.handle_)),
        committed_(std::move(other.committed_)) {}
  shared_block& operator=(shared_block&& other) noexcept {
    if (this != &other) {
      unmap();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      handle_ = std::move(other.handle_);
      committed_ = std::move(other.committed_);
    }
    return *this;
  }
  shared_block(const shared_block&) = delete;
  shared_block& operator=(const shared_block&) = delete;
  ~shared_block() { unmap(); }

  /// True where this platform has shared blocks (else payloads travel through the channel):
  /// Linux, portable POSIX (macOS) and Windows today.
  static bool supported() noexcept;
  /// A new zero-filled block. Throws std::system_error.
  static shared_block create(std::size_t size);
  /// Makes the block at least `size` bytes, keeping its contents. Throws std::system_error.
  /// Windows and portable POSIX: the contents move to a new object (macOS sizes a shared memory
  /// object only once), so tokens exported before name the old one.
  void grow(std::size_t size);
  /// Copies `count` bytes into the block at `offset` (offset + count <= size()). On Linux
  /// through the descriptor (pwrite): the kernel fills the pages without faulting them into
  /// this process's mapping, which on a fresh block costs more than the copy itself. Portable
  /// POSIX: through the mapping (macOS's shared memory objects cannot be written with pwrite).
  /// Throws std::system_error.
  void write(std::size_t offset, const void* bytes, std::size_t count);
  /// Gives back the memory behind the whole pages inside [offset, offset + count), for
  /// every process that maps the block, once nobody will read those bytes again (they read
  /// as zero afterwards). Linux: madvise(MADV_REMOVE). Elsewhere it does nothing. Never fails:
  /// at worst the memory is freed later, with the block.
  void discard(std::size_t offset, std::size_t count) noexcept;
  /// Faults in the pages of [offset, offset + count) in one pass, ahead of reading them
  /// (Linux 5.14+: MADV_POPULATE_READ). Elsewhere, or on older kernels, nothing: the pages then
  /// fault in as they are read. Never fails.
  void prefetch(std::size_t offset, std::size_t count) noexcept;
  char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

  /// Parent side: a token with which `receiver` can open this block (open_from_parent).
  /// Linux: the number of this process's descriptor, which the receiver opens through
  /// /proc/<pid>/fd. Portable POSIX (macOS): the descriptor itself travels, added to
  /// `attached` for the write that carries the frame (the caller keeps this block until that
  /// write); the token is the block's inode number, checked on arrival. Windows: a handle
  /// duplicated into the receiver, which owns it from then on. Throws std::system_error.
  std::uint64_t export_to_child(const child& receiver, std::vector<native_handle>& attached);
  /// Child side: a token with which the parent can open this block (open_from_child), valid
  /// while this block lives. Portable POSIX: the descriptor is added to `attached`, as above.
  std::uint64_t export_to_parent(std::vector<native_handle>& attached);
  /// Child side: maps the block the parent exported, without faulting its pages in (the
  /// reader prefetches what it is about to read). Portable POSIX: the block's descriptor is the
  /// next one that arrived on `from` (so a frame's handles are taken before its block). Throws
  /// std::system_error, or std::runtime_error if no descriptor came.
  static shared_block open_from_parent(std::uint64_t token, std::size_t size, channel& from);
  /// Parent side: maps the block `sender` exported (portable POSIX: the next descriptor that
  /// arrived on `from`). Throws std::system_error, or std::runtime_error if none came.
  static shared_block open_from_child(const child& sender, std::uint64_t token, std::size_t size,
                                      channel& from);
  /// Child side: gives up a token the parent exported without mapping it (a task that will
  /// not run here). Windows closes the duplicated handle; portable POSIX takes the descriptor
  /// that came on `from` and closes it; Linux has nothing to free.
  static void forget_from_parent(std::uint64_t token, channel& from) noexcept;

  /// A block for a shared object (mp::queue, mp::pipe, mp::shared_memory...): `size` bytes,
  /// zero-filled, its handle of the travelling kind (it reaches other processes by
  /// travel_out()). With `sparse`, memory is taken only as pages are first used: Linux leaves
  /// the memfd's pages unallocated until written; Windows reserves the section and
  /// make_usable() commits what is about to be touched. Throws std::system_error.
  static shared_block create_shared(std::size_t size, bool sparse);
  /// Maps the whole block of `size` bytes that `handle` (received, travel_in()) refers to,
  /// keeping the handle (to pass it on). Throws std::system_error.
  static shared_block map_received(owned_handle handle, std::size_t size, bool sparse);
  /// Before [offset, offset + count) of a sparse block is first touched in this process:
  /// Windows commits those pages (in granules, remembered); elsewhere nothing. Throws
  /// std::system_error.
  void make_usable(std::size_t offset, std::size_t count);
  /// The handle behind the block (to pass on).
  native_handle handle() const noexcept { return handle_.get(); }

 private:
  /// Unmaps the view (the handle closes itself).
  void unmap() noexcept;
  char* data_ = nullptr;
  std::size_t size_ = 0;
  owned_handle handle_;
  /// Windows, sparse blocks: which granules this process has committed (empty otherwise).
  /// Atomic: a queue's consumer makes its message usable without the queue's lock, while a
  /// producer thread of the same process may commit other granules under it.
  std::vector<std::atomic<bool>> committed_;
};

}  // namespace multiproc::detail::os
