// The backend seam, part 1: owned OS handles. Every seam class holds its descriptors
// (POSIX) or HANDLEs (Windows) through owned_handle, so each is closed exactly once.
#pragma once

#include <cstdint>
#include <utility>

namespace multiproc::detail::os {

/// A file descriptor on POSIX, a HANDLE on Windows.
using native_handle = std::intptr_t;
inline constexpr native_handle invalid_handle = -1;

/// Whose a handle is. POSIX: internal ones (channels, pidfds, payload blocks) are closed in
/// every forked child; travelling ones (behind mp::queue, mp::pipe and the shared-state
/// objects) survive mp::fork() as Python's objects survive os.fork, and reach the children the
/// library starts only as arguments. Windows: no difference.
enum class handle_kind : std::uint8_t { internal, travelling };

/// Owns one OS handle and closes it once. Move-only.
/// POSIX: a forked child closes the library's descriptors it inherited (posix/descriptors.hpp);
/// an owned_handle made before such a fork never closes its number again, because by then the
/// number may name one of the program's own files. Windows: a plain handle owner.
class owned_handle {
 public:
  owned_handle() = default;
  /// Takes ownership of `value` (which the backend has registered as `kind`, on POSIX).
  explicit owned_handle(native_handle value, handle_kind kind = handle_kind::internal) noexcept;
  owned_handle(owned_handle&& other) noexcept
      : value_(std::exchange(other.value_, invalid_handle)), stamp_(other.stamp_) {}
  owned_handle& operator=(owned_handle&& other) noexcept {
    if (this != &other) {
      reset();
      value_ = std::exchange(other.value_, invalid_handle);
      stamp_ = other.stamp_;
    }
    return *this;
  }
  owned_handle(const owned_handle&) = delete;
  owned_handle& operator=(const owned_handle&) = delete;
  ~owned_handle() { reset(); }

  native_handle get() const noexcept { return value_; }
  explicit operator bool() const noexcept { return value_ != invalid_handle; }
  /// Gives the handle up without closing it (its new owner takes it, registered as it is).
  native_handle release() noexcept { return std::exchange(value_, invalid_handle); }
  /// Closes the handle (if this process still owns that number) and leaves this empty.
  void reset() noexcept;

 private:
  native_handle value_ = invalid_handle;
  /// Backend bookkeeping stamped at construction (POSIX: the kind and its epoch; Windows: 0).
  std::uint32_t stamp_ = 0;
};

/// A second handle to what `handle` refers to, owned by this process as `kind`. Throws
/// std::system_error.
owned_handle duplicate_handle(native_handle handle, handle_kind kind);

}  // namespace multiproc::detail::os
