// Shared blocks where the POSIX backend has no unnamed block a peer can open: not offered,
// so large payloads travel through the channel (src/core/protocol/codec.cpp checks
// shared_block::supported()).
#include <cstring>
#include <system_error>

#include "../os/shared_block.hpp"

namespace multiproc::detail::os {

namespace {
[[noreturn]] void unsupported() {
  throw std::system_error(std::make_error_code(std::errc::function_not_supported),
                          "multiproc: shared blocks");
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
shared_block shared_block::create_shared(std::size_t, bool) {
  unsupported();
}
shared_block shared_block::map_received(owned_handle, std::size_t, bool) {
  unsupported();
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
