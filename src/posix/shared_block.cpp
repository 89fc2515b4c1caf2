// Shared blocks on POSIX: what every POSIX system does the same way. Creating, growing and
// handing a block to a peer differ: shared_block_linux.cpp (an anonymous memfd the peer opens
// through /proc/<pid>/fd) or shared_block_portable.cpp.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "../os/shared_block.hpp"
#include "internal.hpp"

namespace multiproc::detail::os {

void shared_block::unmap() noexcept {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
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

void shared_block::forget_from_parent(std::uint64_t) noexcept {
  // The token names the parent's own descriptor: nothing was handed to this process.
}

}  // namespace multiproc::detail::os
