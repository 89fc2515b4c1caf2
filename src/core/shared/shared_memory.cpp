// mp::shared_memory, the library side (mp::value, mp::array and their raw forms are templates
// over it): one shared object whose payload is the user's bytes. Not sparse: the memory is
// usable everywhere at once (Windows commits the section; Linux takes pages as they are
// touched anyway).
#include <multiproc/shared_memory.hpp>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>

#include "../protocol/frame.hpp"
#include "shared_object.hpp"

namespace multiproc::detail {

namespace {
/// The payload: the size asked for, then the bytes from `data_at` (64-byte aligned).
constexpr std::size_t data_at = 64;
}  // namespace

/// A block in this process. Made on first use (or when it first travels), so a handle
/// default-made only to be decoded into costs nothing.
class memory_core {
 public:
  explicit memory_core(std::size_t bytes) : size_(bytes) {}
  explicit memory_core(shared_object object) : object_(std::move(object)) {
    size_ = static_cast<std::size_t>(*reinterpret_cast<std::uint64_t*>(object_->payload()));
    data_.store(reinterpret_cast<std::byte*>(object_->payload() + data_at));
  }
  shared_object& object() {
    (void)data();
    return *object_;
  }
  std::byte* data() {
    std::byte* p = data_.load(std::memory_order_acquire);
    if (p != nullptr) return p;
    std::call_once(created_, [&] {
      object_ = shared_object::create(shared_object::kind::memory,
                                      data_at + std::max<std::size_t>(size_, 1), false);
      *reinterpret_cast<std::uint64_t*>(object_->payload()) = size_;
      data_.store(reinterpret_cast<std::byte*>(object_->payload() + data_at),
                  std::memory_order_release);
    });
    return data_.load(std::memory_order_acquire);
  }
  std::size_t size() const noexcept { return size_; }

 private:
  std::size_t size_ = 0;
  std::once_flag created_;
  std::optional<shared_object> object_;
  std::atomic<std::byte*> data_{nullptr};
};

std::shared_ptr<memory_core> memory_make(std::size_t bytes) {
  return std::make_shared<memory_core>(bytes);
}

std::string memory_export(memory_core& core) {
  return core.object().export_for_travel();
}

std::shared_ptr<memory_core> memory_import(const std::string& exported) {
  auto core =
      std::make_shared<memory_core>(shared_object::import(shared_object::kind::memory, exported));
  if (core->object().payload_size() < data_at + core->size()) {
    throw serialization_error(serialization_error::phase::decode_arguments,
                              "mp::shared_memory: the block is smaller than it claims");
  }
  return core;
}

std::byte* memory_data(memory_core& core) {
  return core.data();
}

std::size_t memory_size(memory_core& core) noexcept {
  return core.size();
}

}  // namespace multiproc::detail

namespace multiproc {

shared_memory::shared_memory(std::size_t bytes) : core_(detail::memory_make(bytes)) {}

}  // namespace multiproc
