// multiproc — memory processes share: mp::shared_memory (Python's
// multiprocessing.shared_memory.SharedMemory, unnamed), mp::value / mp::raw_value (Value /
// RawValue) and mp::array / mp::raw_array (Array / RawArray).
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <multiproc/config.hpp>
#include <multiproc/synchronize.hpp>

namespace multiproc {

namespace detail {
class memory_core;
MULTIPROC_API std::shared_ptr<memory_core> memory_make(std::size_t bytes);
MULTIPROC_API std::string memory_export(memory_core& core);
MULTIPROC_API std::shared_ptr<memory_core> memory_import(const std::string& exported);
MULTIPROC_API std::byte* memory_data(memory_core& core);
MULTIPROC_API std::size_t memory_size(memory_core& core) noexcept;

template <class T>
inline constexpr bool shareable_v = std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>;
}  // namespace detail

/// Python's shared_memory.SharedMemory, without a name: `bytes` of zero-filled memory that
/// every process holding a copy of this handle maps. It travels as an argument of mp::process,
/// of a pool task and of a pool initializer, on every start method -- the handle travels, not
/// the bytes, so a 256 MiB block costs what a small argument does. Freed when the last handle
/// in any process goes, however the processes end (Linux: a memfd; Windows: an unnamed
/// section); nothing to unlink. No locking: synchronise with an mp::mutex or similar.
class MULTIPROC_API shared_memory {
 public:
  /// `bytes` of zeroed shared memory. Throws nothing: the memory is made on first use (or when
  /// the handle first travels), which may throw std::system_error.
  explicit shared_memory(std::size_t bytes = 0);
  /// The first byte (aligned to 64 bytes); the same memory in every process, at a different
  /// address in each. Throws std::system_error if the memory cannot be made (first use).
  std::byte* data() const { return detail::memory_data(*core_); }
  /// The size asked for.
  std::size_t size() const noexcept { return detail::memory_size(*core_); }
  /// data() and size() as a span.
  std::span<std::byte> span() const { return {data(), size()}; }

  /// cereal: how the handle travels (Throws mp::serialization_error inside a queue or a pipe,
  /// or as a task's result).
  template <class Archive>
  void save(Archive& archive) const {
    archive(detail::memory_export(*core_));
  }
  /// cereal: the receiving side of save(). Throws mp::serialization_error if the memory cannot
  /// be mapped here.
  template <class Archive>
  void load(Archive& archive) {
    std::string exported;
    archive(exported);
    core_ = detail::memory_import(exported);
  }

 private:
  std::shared_ptr<detail::memory_core> core_;
};

/// Python's RawArray: `n` elements of a trivially copyable `T` in shared memory, with no lock.
/// A handle travelling as mp::shared_memory does. Element access is plain memory access:
/// concurrent writers need a lock of their own (or use mp::array).
template <class T>
class raw_array {
  static_assert(detail::shareable_v<T>,
                "multiproc: raw_array/array/raw_value/value hold only trivially copyable types "
                "(no pointers, no std::string or std::vector: their contents would not be "
                "shared); use a fixed-size array of char or a struct of numbers");

 public:
  /// `n` value-initialised (zero) elements (the memory is made on first use, as
  /// mp::shared_memory's).
  explicit raw_array(std::size_t n = 0) : memory_(n * sizeof(T)), size_(n) {}
  /// A copy of `values`. Throws std::system_error.
  explicit raw_array(const std::vector<T>& values) : raw_array(values.size()) {
    if (!values.empty())
      std::memcpy(static_cast<void*>(data()), values.data(), values.size() * sizeof(T));
  }
  /// Element `i` (no bounds check).
  T& operator[](std::size_t i) const { return data()[i]; }
  /// The number of elements.
  std::size_t size() const noexcept { return size_; }
  /// The first element. Throws std::system_error if the memory cannot be made (first use).
  T* data() const { return reinterpret_cast<T*>(memory_.data()); }
  /// The elements as a span.
  std::span<T> span() const { return {data(), size_}; }

  /// cereal: the handle travels.
  template <class Archive>
  void serialize(Archive& archive) {
    archive(memory_, size_);
  }

 private:
  shared_memory memory_;
  std::size_t size_;
};

/// Python's Array (lock=True): an mp::raw_array with an mp::recursive_mutex, get_lock().
/// Element access itself does not lock (unlike Python's per-element locking): hold get_lock()
/// around a read-modify-write, e.g. `std::lock_guard g(a.get_lock()); a[0] += 1;`.
template <class T>
class array {
 public:
  /// `n` zero elements and a new lock (made on first use).
  explicit array(std::size_t n = 0) : elements_(n) {}
  /// A copy of `values` and a new lock. Throws std::system_error.
  explicit array(const std::vector<T>& values) : elements_(values) {}
  /// Element `i` (no bounds check; no locking).
  T& operator[](std::size_t i) const { return elements_[i]; }
  /// The number of elements.
  std::size_t size() const noexcept { return elements_.size(); }
  /// The first element.
  T* data() const { return elements_.data(); }
  /// The elements as a span.
  std::span<T> span() const { return elements_.span(); }
  /// The lock that goes with the array (shared by every copy, in every process).
  recursive_mutex& get_lock() noexcept { return lock_; }

  /// cereal: the handles travel.
  template <class Archive>
  void serialize(Archive& archive) {
    archive(elements_, lock_);
  }

 private:
  raw_array<T> elements_;
  recursive_mutex lock_;
};

/// Python's RawValue: one trivially copyable `T` in shared memory, with no lock. load() and
/// store() are plain copies: they may tear, and concurrent read-modify-writes lose updates.
template <class T>
class raw_value {
 public:
  /// Holds all-zero bytes (the memory is made on first use).
  raw_value() : cell_(1) {}
  /// Holds `initial`. Throws std::system_error if the memory cannot be made.
  explicit raw_value(const T& initial) : cell_(1) { store(initial); }
  /// A copy of the value.
  T load() const {
    T out;
    std::memcpy(static_cast<void*>(&out), cell_.data(), sizeof(T));
    return out;
  }
  /// Replaces the value.
  void store(const T& x) { std::memcpy(static_cast<void*>(cell_.data()), &x, sizeof(T)); }
  /// The value itself, in shared memory.
  T* get() const { return cell_.data(); }

  /// cereal: the handle travels.
  template <class Archive>
  void serialize(Archive& archive) {
    archive(cell_);
  }

 private:
  raw_array<T> cell_;
};

/// Python's Value (lock=True): an mp::raw_value with an mp::recursive_mutex. load() and
/// store() each take the lock; a read-modify-write needs it held around both:
/// `std::lock_guard g(v.get_lock()); v.store(v.load() + 1);` (the lock is recursive).
template <class T>
class value {
 public:
  /// Holds all-zero bytes (the memory and the lock are made on first use).
  value() = default;
  /// Holds `initial`. Throws std::system_error if the memory cannot be made.
  explicit value(const T& initial) : cell_(initial) {}
  /// A copy of the value, under the lock. Throws mp::owner_died_error (see mp::mutex).
  T load() const {
    std::lock_guard<recursive_mutex> guard(lock_);
    return cell_.load();
  }
  /// Replaces the value under the lock. Throws mp::owner_died_error.
  void store(const T& x) {
    std::lock_guard<recursive_mutex> guard(lock_);
    cell_.store(x);
  }
  /// The lock that goes with the value (shared by every copy, in every process).
  recursive_mutex& get_lock() noexcept { return lock_; }
  /// The value itself, in shared memory (for use under get_lock()).
  T* get() const { return cell_.get(); }

  /// cereal: the handles travel.
  template <class Archive>
  void serialize(Archive& archive) {
    archive(cell_, lock_);
  }

 private:
  raw_value<T> cell_;
  mutable recursive_mutex lock_;
};

}  // namespace multiproc
