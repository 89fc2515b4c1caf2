// Shared blocks on POSIX: what every POSIX system does the same way. Creating, growing,
// writing and handing a block to a peer differ: shared_block_linux.cpp (an anonymous memfd the
// peer opens through /proc/<pid>/fd) or shared_block_portable.cpp (a shm_open'd object,
// unlinked at once, whose descriptor travels with the frame that names it).
#include <sys/mman.h>

#include "../os/shared_block.hpp"
#include "internal.hpp"

namespace multiproc::detail::os {

void shared_block::unmap() noexcept {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace multiproc::detail::os
