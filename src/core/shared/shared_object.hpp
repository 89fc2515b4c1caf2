// What every shared object (mp::queue, mp::pipe's connections, and the shared-state family)
// is made of: a block of shared memory that says what it is, the synchronisation in it
// (os::shared_sync), and how it travels to another process as an argument. Nothing is named:
// the block and the kernel objects vanish with the last process holding them, however it ends.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "../../os/shared_block.hpp"
#include "../../os/sync.hpp"

namespace multiproc::detail {

class shared_object {
 public:
  enum class kind : std::uint32_t {
    queue = 1,
    pipe = 2,
    sync = 3,    ///< mp::mutex, mp::event, ... (synchronize.cpp)
    memory = 4,  ///< mp::shared_memory, mp::value, mp::array (shared_memory.cpp)
  };

  /// A new object of `kind` with `payload` bytes of its own (zeroed) after the header; with
  /// `sparse`, the payload's memory is taken only as it is used. Throws std::system_error.
  static shared_object create(kind what, std::size_t payload, bool sparse);
  /// What another process needs to open this object: the handles join the call being encoded
  /// (travel_out), the bytes name them. Throws serialization_error outside such a call.
  std::string export_for_travel() const;
  /// Opens what export_for_travel() wrote, in the process decoding the call (travel_in).
  /// Throws serialization_error if it is not an object of `what` or cannot be mapped.
  static shared_object import(kind what, std::string_view exported);

  char* payload() const noexcept { return block_.data() + payload_offset; }
  std::size_t payload_size() const noexcept { return block_.size() - payload_offset; }
  /// Before touching [offset, offset + count) of the payload (see shared_block::make_usable).
  void make_usable(std::size_t offset, std::size_t count) {
    block_.make_usable(payload_offset + offset, count);
  }
  /// Gives back the memory behind whole pages of the payload nobody will read again.
  void discard(std::size_t offset, std::size_t count) noexcept {
    block_.discard(payload_offset + offset, count);
  }
  os::shared_sync& sync() noexcept { return sync_; }

  /// Where the payload starts in the block: after the header and the sync state.
  static constexpr std::size_t payload_offset = 256;

 private:
  os::shared_block block_;
  os::shared_sync sync_;
  kind what_ = kind::queue;
  bool sparse_ = false;
};

/// Holds a shared object's lock for a scope. Throws std::system_error if it cannot be taken.
class shared_lock {
 public:
  explicit shared_lock(shared_object& object);
  ~shared_lock() { object_.sync().unlock(); }
  shared_lock(const shared_lock&) = delete;
  shared_lock& operator=(const shared_lock&) = delete;
  /// With the lock held: releases it, sleeps until a wake_all or `timeout`, takes it again.
  void wait(std::optional<std::chrono::nanoseconds> timeout);
  /// True if a holder died holding this lock since the object was made (its state may be
  /// half-done); the object decides what that means.
  bool owner_died() const noexcept { return owner_died_; }

 private:
  shared_object& object_;
  bool owner_died_ = false;
};

}  // namespace multiproc::detail
