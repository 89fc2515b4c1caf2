// The fuzz targets' global operator new and delete, on malloc and free (which AddressSanitizer
// still tracks). Two reasons:
//   - ASan's own operator new reports a failed allocation as a crash instead of throwing
//     std::bad_alloc, so a claimed length too large to allocate at all would look like a bug
//     of the code under test when in a real build it is a std::bad_alloc the code handles.
//     Here it throws, as in a real build (scripts/fuzz.sh sets allocator_may_return_null=1).
//   - Under MULTIPROC_FUZZ_SKIP_KNOWN (scripts/fuzz.sh --skip-known), any allocation above
//     32 MiB throws std::bad_alloc, so a long run is not stopped again and again by the known
//     "allocates what was claimed, not what was sent" findings. Without it, such an
//     allocation reaches libFuzzer's -malloc_limit_mb and is reported.
#include <cstddef>
#include <cstdlib>
#include <new>

#include "support.hpp"

namespace {

constexpr std::size_t skip_known_limit = std::size_t{32} << 20;

void* allocate(std::size_t size, std::size_t alignment) {
  if (multiproc_fuzz::skip_known("alloc") && size > skip_known_limit) throw std::bad_alloc();
  if (size == 0) size = 1;
  void* memory = nullptr;
  if (alignment <= alignof(std::max_align_t)) {
    memory = std::malloc(size);
  } else {
    const std::size_t rounded = (size + alignment - 1) / alignment * alignment;
    memory = std::aligned_alloc(alignment, rounded);
  }
  if (memory == nullptr) throw std::bad_alloc();
  return memory;
}

void* allocate_nothrow(std::size_t size, std::size_t alignment) noexcept {
  try {
    return allocate(size, alignment);
  } catch (...) {
    return nullptr;
  }
}

}  // namespace

void* operator new(std::size_t size) {
  return allocate(size, 0);
}
void* operator new[](std::size_t size) {
  return allocate(size, 0);
}
void* operator new(std::size_t size, std::align_val_t alignment) {
  return allocate(size, static_cast<std::size_t>(alignment));
}
void* operator new[](std::size_t size, std::align_val_t alignment) {
  return allocate(size, static_cast<std::size_t>(alignment));
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return allocate_nothrow(size, 0);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return allocate_nothrow(size, 0);
}
void* operator new(std::size_t size, std::align_val_t alignment, const std::nothrow_t&) noexcept {
  return allocate_nothrow(size, static_cast<std::size_t>(alignment));
}
void* operator new[](std::size_t size, std::align_val_t alignment, const std::nothrow_t&) noexcept {
  return allocate_nothrow(size, static_cast<std::size_t>(alignment));
}

void operator delete(void* memory) noexcept {
  std::free(memory);
}
void operator delete[](void* memory) noexcept {
  std::free(memory);
}
void operator delete(void* memory, std::size_t) noexcept {
  std::free(memory);
}
void operator delete[](void* memory, std::size_t) noexcept {
  std::free(memory);
}
void operator delete(void* memory, std::align_val_t) noexcept {
  std::free(memory);
}
void operator delete[](void* memory, std::align_val_t) noexcept {
  std::free(memory);
}
void operator delete(void* memory, std::size_t, std::align_val_t) noexcept {
  std::free(memory);
}
void operator delete[](void* memory, std::size_t, std::align_val_t) noexcept {
  std::free(memory);
}
void operator delete(void* memory, const std::nothrow_t&) noexcept {
  std::free(memory);
}
void operator delete[](void* memory, const std::nothrow_t&) noexcept {
  std::free(memory);
}
void operator delete(void* memory, std::align_val_t, const std::nothrow_t&) noexcept {
  std::free(memory);
}
void operator delete[](void* memory, std::align_val_t, const std::nothrow_t&) noexcept {
  std::free(memory);
}
