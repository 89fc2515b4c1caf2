// Shared objects (see shared_object.hpp).
#include "shared_object.hpp"

#include <cstring>
#include <new>
#include <vector>

#include <multiproc/errors.hpp>

#include "../protocol/call.hpp"
#include "../protocol/frame.hpp"

namespace multiproc::detail {

namespace {

constexpr std::uint32_t object_magic = 0x4f53504d;  // "MPSO"

struct object_header {
  std::uint32_t magic;
  shared_object::kind what;
  std::uint64_t size;
};
constexpr std::size_t sync_offset = 64;
static_assert(sizeof(object_header) <= sync_offset);
static_assert(sync_offset + os::shared_sync::memory_size <= shared_object::payload_offset);

object_header& header_of(os::shared_block& block) {
  return *reinterpret_cast<object_header*>(block.data());
}

}  // namespace

shared_object shared_object::create(kind what, std::size_t payload, bool sparse) {
  shared_object object;
  object.sparse_ = sparse;
  object.what_ = what;
  object.block_ = os::shared_block::create_shared(payload_offset + payload, sparse);
  object.block_.make_usable(0, payload_offset);
  new (object.block_.data()) object_header{object_magic, what, payload_offset + payload};
  object.sync_ = os::shared_sync::create(object.block_.data() + sync_offset);
  return object;
}

std::string shared_object::export_for_travel() const {
  // kind, size, sparse, then the index of each handle in the call: the block, then the sync's.
  std::string out;
  append_u64(out, static_cast<std::uint64_t>(what_));
  append_u64(out, block_.size());
  append_u64(out, sparse_ ? 1 : 0);
  append_u64(out, travel_out(block_.handle()));
  append_u64(out, sync_.handles().size());
  for (const auto& handle : sync_.handles())
    append_u64(out, travel_out(handle.get()));
  return out;
}

shared_object shared_object::import(kind what, std::string_view exported) {
  shared_object object;
  try {
    body_reader reader(exported.data(), exported.size());
    const auto claimed = static_cast<kind>(reader.u64());
    const std::uint64_t size = reader.u64();
    object.sparse_ = reader.u64() != 0;
    object.what_ = what;
    os::owned_handle block = travel_in(static_cast<std::uint32_t>(reader.u64()));
    const std::uint64_t sync_handles = reader.u64();
    if (sync_handles > 4) throw std::runtime_error("too many handles");
    std::vector<os::owned_handle> handles;
    for (std::uint64_t i = 0; i < sync_handles; ++i)
      handles.push_back(travel_in(static_cast<std::uint32_t>(reader.u64())));
    if (claimed != what || size < payload_offset) {
      throw std::runtime_error("the object is not of the expected kind");
    }
    object.block_ = os::shared_block::map_received(std::move(block), size, object.sparse_);
    object.block_.make_usable(0, payload_offset);
    const object_header& header = header_of(object.block_);
    if (header.magic != object_magic || header.what != what || header.size != size) {
      throw std::runtime_error("the shared memory does not hold the expected object");
    }
    object.sync_ = os::shared_sync::adopt(object.block_.data() + sync_offset, std::move(handles));
  } catch (const serialization_error&) {
    throw;
  } catch (const std::exception& e) {
    throw serialization_error(serialization_error::phase::decode_arguments,
                              std::string("a shared object could not be opened: ") + e.what());
  }
  return object;
}

shared_lock::shared_lock(shared_object& object) : object_(object) {
  owner_died_ = object.sync().lock(std::nullopt) == os::shared_sync::outcome::acquired_owner_died;
}

void shared_lock::wait(std::optional<std::chrono::nanoseconds> timeout) {
  if (object_.sync().wait(timeout) == os::shared_sync::outcome::acquired_owner_died) {
    owner_died_ = true;
  }
}

}  // namespace multiproc::detail
