// The backend seam: everything the portable core needs from the operating system.
// src/posix/*.cpp and src/win32/*.cpp implement these declarations; src/core talks only to them.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <multiproc/config.hpp>

namespace multiproc::detail::os {

/// A file descriptor on POSIX, a HANDLE on Windows.
using native_handle = std::intptr_t;
inline constexpr native_handle invalid_handle = -1;

/// Which descriptors a process holds as its own: POSIX counts the fork clean-ups this
/// process went through (a forked child closes the library's descriptors it inherited, so an
/// object from before the fork must never close its number again: the program may be using
/// it by now). Windows: always 0 (handles are not inherited that way).
unsigned descriptor_generation() noexcept;

// ---------------------------------------------------------------------------------------------
// Channels

/// One end of a duplex byte stream between a parent and one child (two anonymous pipes).
/// Every handle is created close-on-exec / non-inheritable; only a spawn hands one on, explicitly.
class channel {
 public:
  channel() = default;
  channel(native_handle read_end, native_handle write_end) noexcept
      : read_(read_end), write_(write_end) {}
  channel(channel&& other) noexcept
      : read_(std::exchange(other.read_, invalid_handle)),
        write_(std::exchange(other.write_, invalid_handle)),
        generation_(other.generation_) {}
  channel& operator=(channel&& other) noexcept {
    if (this != &other) {
      close();
      read_ = std::exchange(other.read_, invalid_handle);
      write_ = std::exchange(other.write_, invalid_handle);
      generation_ = other.generation_;
    }
    return *this;
  }
  channel(const channel&) = delete;
  channel& operator=(const channel&) = delete;
  ~channel() { close(); }

  /// Blocks until at least one byte is there; returns 0 at end of stream (peer closed).
  /// Throws std::system_error on any other failure.
  std::size_t read_some(void* buffer, std::size_t size);
  /// True if read_some() would return at once (bytes are there, or the peer closed). Never
  /// blocks, never throws. POSIX: poll() with no timeout; Windows: PeekNamedPipe.
  bool readable_now() const noexcept;
  /// Writes every byte, blocking as needed. Throws std::system_error; a peer that is gone
  /// gives errc::broken_pipe (never SIGPIPE).
  void write_all(const void* data, std::size_t size);
  /// Bytes the writing end can take while the peer reads nothing (the pipe's buffer).
  std::size_t write_capacity() const noexcept;
  /// Closes both ends (idempotent).
  void close() noexcept;
  /// Closes only the writing end: the peer reads end of stream.
  void close_write() noexcept;
  bool is_open() const noexcept { return read_ != invalid_handle || write_ != invalid_handle; }
  native_handle read_handle() const noexcept { return read_; }
  native_handle write_handle() const noexcept { return write_; }

 private:
  native_handle read_ = invalid_handle;
  native_handle write_ = invalid_handle;
  unsigned generation_ = descriptor_generation();
};

/// A connected pair: `first` is the parent's end, `second` the child's. Throws start_error.
std::pair<channel, channel> make_channel_pair();

/// Blocks SIGPIPE for the calling thread for good (a thread the library owns); no-op on Windows.
void block_broken_pipe_signal_in_this_thread() noexcept;

// ---------------------------------------------------------------------------------------------
// Children

/// A child process this process started. Thread-safe: one thread may wait while another
/// terminates. The destructor neither waits nor kills: the owner decides.
class child {
 public:
  child() = default;
  child(child&& other) noexcept;
  child& operator=(child&& other) noexcept;
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child();

  bool valid() const noexcept { return pid_ != 0; }
  long pid() const noexcept { return pid_; }
  /// Waits until the child ended or `timeout` ran out (nullopt: no limit), and reaps it.
  /// Returns true once it has ended.
  bool wait(std::optional<std::chrono::nanoseconds> timeout);
  /// Python's exit code: the status, or -N for signal N; nullopt until reaped.
  std::optional<int> exit_code() const;
  /// Asks the child to end (SIGTERM; TerminateProcess on Windows). No-op once reaped.
  void terminate() noexcept;
  /// Ends the child at once (SIGKILL; TerminateProcess on Windows). No-op once reaped.
  void kill() noexcept;
  /// The process handle on Windows, the pidfd on Linux (or invalid_handle).
  native_handle handle() const noexcept { return handle_; }

  // Used by the backends to build a child.
  child(long pid, native_handle handle) noexcept : pid_(pid), handle_(handle) {}

 private:
  void send_signal(int signal_number) noexcept;
  mutable std::mutex mutex_;
  long pid_ = 0;
  native_handle handle_ = invalid_handle;
  std::optional<int> exit_code_;
  int signal_sent_ = 0;  // Windows: which request ended it, so it reads back as -SIGTERM/-SIGKILL
  int waiters_ = 0;      // POSIX: threads inside wait(), which may be polling the pidfd
  unsigned generation_ = descriptor_generation();
};

/// Which parts a child should tie to its parent's life.
enum class child_kind : std::uint8_t {
  process,      ///< an mp::process: lives on its own, like Python's Process
  pool_worker,  ///< dies with the parent (PR_SET_PDEATHSIG / job object) besides seeing EOF
};

#if MULTIPROC_HAS_FORK
/// Forks; the child closes every library-owned descriptor but `keep`, resets nothing else
/// (fork semantics), runs `entry(context)` and _exit()s with its return value after flushing
/// stdio. Throws start_error with the OS error.
child fork_child(int (*entry)(void* context), void* context, const channel* keep, child_kind kind);
/// The raw fork of mp::fork(): returns 0 in the child, the pid in the parent.
long fork_plain();
#endif

/// Re-executes this program's own image (or the set executable) with `child_end` as its
/// only inherited descriptor besides stdio, and the worker marker carrying `secret` in its
/// environment. Throws start_error with the OS error (exec failures included) and leaves no
/// zombie behind.
child spawn_child(channel& child_end, std::string_view secret, child_kind kind);

/// Name of the environment variable that marks a spawned child.
inline constexpr const char* spawn_marker_variable = "MULTIPROC_SPAWNED";

/// In a spawned child: takes the channel named by the token the parent put in the marker.
/// Returns a closed channel if the token names no usable channel.
channel adopt_inherited_channel(std::string_view token);

/// In a child: ties this process's life to its parent `expected_parent` where the platform can
/// (Linux: PR_SET_PDEATHSIG). Returns false if the parent has already gone.
bool die_with_parent(long expected_parent) noexcept;

/// Overrides the program spawned children run (empty: this program's own image).
void set_spawn_executable(std::string utf8_path);

// ---------------------------------------------------------------------------------------------
// This process

long current_pid() noexcept;
long parent_pid() noexcept;
unsigned hardware_cpu_count() noexcept;
/// A string that differs between two different program images (build id, or size and time).
std::string image_identity();
/// Removes a variable from this process's environment.
void unset_environment(const char* name) noexcept;
/// Fills `buffer` with cryptographically random bytes. Throws start_error on failure.
void random_bytes(void* buffer, std::size_t size);

// ---------------------------------------------------------------------------------------------
// Code identity

/// Where a piece of code lives: its module ("" for the main program) and the offset from
/// that module's base. Survives address-space randomisation and re-execution.
struct code_location {
  std::string module;
  std::uint64_t offset = 0;
};
/// Finds the module that holds `address`. Returns false if no loaded module holds it.
bool locate_code(const void* address, code_location& out);
/// The address `module`+`offset` names, if it lies in an executable mapping of that module;
/// nullptr otherwise.
const void* resolve_code(std::string_view module, std::uint64_t offset);

// ---------------------------------------------------------------------------------------------
// Shared memory blocks for large payloads

/// A read-write shared mapping, freed by the OS once no process maps or holds it, so a
/// process dying at any point leaks nothing (memfd on Linux, a section on Windows).
class shared_block {
 public:
  shared_block() = default;
  shared_block(shared_block&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        handle_(std::exchange(other.handle_, invalid_handle)),
        generation_(other.generation_) {}
  shared_block& operator=(shared_block&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      handle_ = std::exchange(other.handle_, invalid_handle);
      generation_ = other.generation_;
    }
    return *this;
  }
  shared_block(const shared_block&) = delete;
  shared_block& operator=(const shared_block&) = delete;
  ~shared_block() { release(); }

  /// True where this platform has shared blocks (else payloads travel through the channel).
  static bool supported() noexcept;
  /// A new zero-filled block. Throws std::system_error.
  static shared_block create(std::size_t size);
  /// Makes the block at least `size` bytes, keeping its contents. Throws std::system_error.
  void grow(std::size_t size);
  /// Copies `count` bytes into the block at `offset` (offset + count <= size()). On Linux
  /// through the descriptor (pwrite): the kernel fills the pages without faulting them into
  /// this process's mapping, which on a fresh block costs more than the copy itself. Throws
  /// std::system_error.
  void write(std::size_t offset, const void* bytes, std::size_t count);
  /// Gives back the memory behind the whole pages inside [offset, offset + count), for
  /// every process that maps the block, once nobody will read those bytes again (they read
  /// as zero afterwards). Linux: madvise(MADV_REMOVE). Elsewhere it does nothing. Never fails:
  /// at worst the memory is freed later, with the block.
  void discard(std::size_t offset, std::size_t count) noexcept;
  /// Faults in the pages of [offset, offset + count) in one pass, ahead of reading them
  /// (Linux 5.14+: MADV_POPULATE_READ). Elsewhere, or on older kernels, nothing: the pages then
  /// fault in as they are read. Never fails.
  void prefetch(std::size_t offset, std::size_t count) noexcept;
  char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

  /// Parent side: a token with which `receiver` can open this block (open_from_parent).
  std::uint64_t export_to_child(const child& receiver);
  /// Child side: a token with which the parent can open this block (open_from_child).
  std::uint64_t export_to_parent();
  /// Child side: maps the block the parent exported, without faulting its pages in (the
  /// reader prefetches what it is about to read). Throws std::system_error.
  static shared_block open_from_parent(std::uint64_t token, std::size_t size);
  /// Parent side: maps the block `sender` exported. Throws std::system_error.
  static shared_block open_from_child(const child& sender, std::uint64_t token, std::size_t size);

 private:
  void release() noexcept;
  char* data_ = nullptr;
  std::size_t size_ = 0;
  native_handle handle_ = invalid_handle;
  unsigned generation_ = descriptor_generation();
};

}  // namespace multiproc::detail::os
