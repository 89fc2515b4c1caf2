// Shared blocks on Windows: unnamed pagefile-backed sections, passed between processes as
// duplicated handles. The system frees a section once its last handle and view are gone, so
// nothing outlives the processes that use it, however they end. Unnamed sections need none of
// Boost.Interprocess's machinery (whose Windows emulation fails under Wine without a shared
// directory), and no name can be guessed or squatted by another program.
#include "../os/shared_block.hpp"
#include "internal.hpp"

#include <algorithm>
#include <cstring>
#include <system_error>

namespace multiproc::detail::os {

namespace {

[[noreturn]] void throw_last_error(const char* what) {
  throw std::system_error(static_cast<int>(GetLastError()), std::system_category(), what);
}

HANDLE create_section(std::size_t size) {
  // A section cannot be empty; a zero-byte block still gets one page behind it.
  const auto bytes = static_cast<std::uint64_t>(std::max<std::size_t>(size, 1));
  const HANDLE section =
      CreateFileMappingW(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE,
                         static_cast<DWORD>(bytes >> 32), static_cast<DWORD>(bytes), nullptr);
  if (section == nullptr) throw_last_error("CreateFileMappingW");
  return section;
}

char* map_section(HANDLE section, std::size_t size) {
  void* view =
      MapViewOfFile(section, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, std::max<std::size_t>(size, 1));
  if (view == nullptr) throw_last_error("MapViewOfFile");
  return static_cast<char*>(view);
}

}  // namespace

void shared_block::unmap() noexcept {
  if (data_ != nullptr) UnmapViewOfFile(std::exchange(data_, nullptr));
  size_ = 0;
}

bool shared_block::supported() noexcept {
  return true;
}

shared_block shared_block::create(std::size_t size) {
  shared_block block;
  block.handle_ = owned_handle(as_native(create_section(size)));
  block.data_ =
      map_section(as_handle(block.handle_.get()), size);  // pagefile sections start zeroed
  block.size_ = size;
  return block;
}

void shared_block::grow(std::size_t size) {
  if (data_ != nullptr && size <= size_) return;
  // A section cannot be resized: the contents move to a new, larger one. Tokens exported
  // before this call name the old section.
  shared_block bigger = create(size);
  if (data_ != nullptr) std::memcpy(bigger.data_, data_, size_);
  *this = std::move(bigger);
}

void shared_block::write(std::size_t offset, const void* bytes, std::size_t count) {
  std::memcpy(data_ + offset, bytes, count);
}

void shared_block::prefetch(std::size_t, std::size_t) noexcept {
  // Views fault in as they are read; PrefetchVirtualMemory would be the tool if it mattered.
}

void shared_block::discard(std::size_t, std::size_t) noexcept {
  // A section's pages cannot be given back piecemeal while a view maps them; they go with
  // the last view and handle.
}

std::uint64_t shared_block::export_to_child(const child& receiver, std::vector<native_handle>&) {
  // The duplicate belongs to the receiver from now on; it is freed with the receiver if the
  // receiver never opens it.
  HANDLE duplicate = nullptr;
  if (!DuplicateHandle(GetCurrentProcess(), as_handle(handle_.get()), as_handle(receiver.handle()),
                       &duplicate, 0, FALSE, DUPLICATE_SAME_ACCESS)) {
    throw_last_error("DuplicateHandle");
  }
  return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(duplicate));
}

std::uint64_t shared_block::export_to_parent(std::vector<native_handle>&) {
  // The parent duplicates this handle out of this process itself (open_from_child), which a
  // child cannot do the other way round: it holds no handle to its parent.
  return static_cast<std::uint64_t>(handle_.get());
}

shared_block shared_block::open_from_parent(std::uint64_t token, std::size_t size, channel&) {
  shared_block block;
  // Owned from here on, so that a failed mapping still closes it.
  block.handle_ = owned_handle(static_cast<native_handle>(token));
  block.data_ = map_section(as_handle(block.handle_.get()), size);
  block.size_ = size;
  return block;
}

shared_block shared_block::open_from_child(const child& sender, std::uint64_t token,
                                           std::size_t size, channel&) {
  // Without DUPLICATE_CLOSE_SOURCE: the sender's own block still owns its handle.
  HANDLE duplicate = nullptr;
  if (!DuplicateHandle(as_handle(sender.handle()), as_handle(static_cast<native_handle>(token)),
                       GetCurrentProcess(), &duplicate, 0, FALSE, DUPLICATE_SAME_ACCESS)) {
    throw_last_error("DuplicateHandle");
  }
  shared_block block;
  block.handle_ = owned_handle(as_native(duplicate));
  block.data_ = map_section(duplicate, size);
  block.size_ = size;
  return block;
}

}  // namespace multiproc::detail::os

namespace multiproc::detail::os {

namespace {
/// Commit granularity of sparse blocks: large enough that committing is rare, small enough
/// that a queue holding little commits little.
constexpr std::size_t commit_granule = std::size_t{1} << 20;
}  // namespace

shared_block shared_block::create_shared(std::size_t size, bool sparse) {
  const auto bytes = static_cast<std::uint64_t>(std::max<std::size_t>(size, 1));
  // SEC_RESERVE: address space only, pages committed (by any view) as make_usable() asks.
  const HANDLE section = CreateFileMappingW(
      INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE | (sparse ? SEC_RESERVE : SEC_COMMIT),
      static_cast<DWORD>(bytes >> 32), static_cast<DWORD>(bytes), nullptr);
  if (section == nullptr) throw_last_error("CreateFileMappingW");
  return map_received(owned_handle(as_native(section), handle_kind::travelling), size, sparse);
}

shared_block shared_block::map_received(owned_handle handle, std::size_t size, bool sparse) {
  shared_block block;
  block.handle_ = std::move(handle);
  // Fails if the section is smaller than `size`: a peer's claim is never trusted further.
  block.data_ = map_section(as_handle(block.handle_.get()), size);
  block.size_ = size;
  if (sparse) {
    block.committed_ = std::vector<std::atomic<bool>>((size + commit_granule - 1) / commit_granule);
  }
  return block;
}

void shared_block::make_usable(std::size_t offset, std::size_t count) {
  if (committed_.empty() || count == 0) return;
  const std::size_t first = offset / commit_granule;
  const std::size_t last = std::min((offset + count - 1) / commit_granule, committed_.size() - 1);
  for (std::size_t g = first; g <= last; ++g) {
    if (committed_[g].load(std::memory_order_acquire)) continue;
    const std::size_t from = g * commit_granule;
    const std::size_t length = std::min(commit_granule, size_ - from);
    if (VirtualAlloc(data_ + from, length, MEM_COMMIT, PAGE_READWRITE) == nullptr) {
      throw_last_error("VirtualAlloc (committing shared memory)");
    }
    committed_[g].store(true, std::memory_order_release);
  }
}

void shared_block::forget_from_parent(std::uint64_t token, channel&) noexcept {
  // export_to_child duplicated the handle into this process: it is ours to close.
  CloseHandle(as_handle(static_cast<native_handle>(token)));
}

}  // namespace multiproc::detail::os
