// Portable internals shared by process, pool and the worker: frames, codecs, task running.
#pragma once

#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include <multiproc/detail/call.hpp>
#include <multiproc/errors.hpp>
#include <multiproc/init.hpp>

#include "../backend.hpp"

namespace multiproc::detail {

// ---- frames -----------------------------------------------------------------------------------

enum class frame_kind : std::uint8_t {
  // parent -> child
  hello = 1,        ///< spawn only: magic, secret, image identity, role
  task = 2,         ///< run a call; the child answers with `result`
  initializer = 3,  ///< run a call before any task; failure answers `initializer_failed`
  release = 4,      ///< the parent has mapped the result block with this token
  stop = 5,         ///< finish and exit
  run_once = 6,     ///< mp::process: run this call, then exit
  // child -> parent
  ready = 10,
  result = 11,
  initializer_failed = 12,
};

enum frame_flags : std::uint8_t {
  body_in_block = 1,  ///< the body is {u64 token, u64 size} naming a shared block
};

enum class result_status : std::uint8_t {
  ok = 0,
  raised = 1,         ///< the target threw: type, what
  bad_arguments = 2,  ///< decoding the arguments failed (or the call was refused): message
  bad_result = 3,     ///< encoding the result failed: message
};

struct frame_header {
  std::uint32_t body_size;
  frame_kind kind;
  std::uint8_t flags;
  std::uint16_t reserved;
  std::uint32_t elapsed_us;  ///< result: how long the task ran (drives the scheduler's depth)
  std::uint32_t reserved2;
  std::uint64_t id;
};
static_assert(sizeof(frame_header) == 24);

/// Largest frame body; a larger call (an mp::process or initializer argument) is refused.
inline constexpr std::size_t max_frame_body = std::size_t{1} << 31;
/// Throws serialization_error if a call of `size` bytes cannot travel in one frame.
void check_frame_size(std::size_t size);
/// Largest body that travels through the channel; larger payloads go through a shared block.
inline constexpr std::size_t spill_threshold = 128 * 1024;
/// The bytes a hello starts with.
inline constexpr char hello_magic[8] = {'M', 'P', 'R', 'O', 'C', '0', '0', '1'};
/// Exit code of a spawned child whose start-up proof failed.
inline constexpr int protocol_failure_exit_code = 86;

/// Appends a header; returns its offset so the body size can be patched.
std::size_t begin_frame(std::string& out, frame_kind kind, std::uint64_t id, std::uint8_t flags = 0,
                        std::uint32_t elapsed_us = 0);
/// Patches the body size of the frame begun at `at`; `more` bytes of its body are not in
/// `out` (the caller writes them to the channel right after it).
void end_frame(std::string& out, std::size_t at, std::size_t more = 0);
void append_u64(std::string& out, std::uint64_t value);
void append_string(std::string& out, std::string_view text);

/// Reads values back from a frame body; throws std::runtime_error when it runs short.
class body_reader {
 public:
  body_reader(const char* data, std::size_t size) : data_(data), end_(data + size) {}
  std::uint64_t u64();
  std::uint8_t u8();
  std::string_view string();
  const char* position() const { return data_; }
  std::size_t remaining() const { return static_cast<std::size_t>(end_ - data_); }

 private:
  void need(std::size_t n) const;
  const char* data_;
  const char* end_;
};

/// Reads whole frames from a channel.
class frame_reader {
 public:
  explicit frame_reader(os::channel& channel) : channel_(channel) {}
  /// The next whole frame, reading as needed; false at end of stream (or a torn frame).
  bool next(frame_header& header, const char*& body);
  /// True if a whole frame is already buffered (no read needed).
  bool has_buffered_frame() const;

 private:
  os::channel& channel_;
  std::vector<char> buffer_ = std::vector<char>(64 * 1024);
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

// ---- encoding calls -----------------------------------------------------------------------------

/// A task body: the code references and the arguments, inline or in a shared block.
struct encoded_body {
  std::string inline_bytes;  ///< the body when it is small
  os::shared_block block;    ///< the body when it is large
  std::size_t block_size = 0;
};

/// Appends the code references and arguments of `call` to `out`. If `allow_block` and the
/// body grows past spill_threshold, moves it (from `body_start` on) into `block` instead and
/// leaves `out` cut back to `body_start`. Throws serialization_error.
void encode_call_body(const call_spec& call, std::string& out, std::size_t body_start,
                      bool allow_block, os::shared_block& block, std::size_t& block_size);

/// What running a task gave.
struct task_outcome {
  result_status status = result_status::ok;
  std::string type_name;  // raised
  std::string message;    // raised / bad_*
};

/// Runs a task body in this process. The result (if `result_out`) is appended to it, or to
/// `result_block` once it grows past spill_threshold (if `allow_block`). Exceptions the
/// target throws are caught and described in the outcome; exit()/abort() in the target end
/// the process as they would anywhere.
/// `consumed_arguments`: the shared block `body` lies in, read by nobody after this call;
/// its memory is given back as the arguments are decoded, so a huge argument is not held
/// twice (mapped and decoded) while the target runs.
task_outcome run_call_body(const char* body, std::size_t size, std::string* result_out,
                           std::size_t result_start, bool allow_block,
                           os::shared_block* result_block, std::size_t* result_block_size,
                           os::shared_block* consumed_arguments = nullptr);

/// The demangled type of the exception being handled, e.g. "std::runtime_error".
std::string current_exception_type();
/// The what() of the exception being handled (empty if it is not a std::exception).
std::string current_exception_message();

/// A stream reading from memory, reused per thread. With `consumed` (the shared block the
/// bytes lie in), each stretch already read is given back to the system (discard()).
std::istream& memory_input(const char* data, std::size_t size,
                           os::shared_block* consumed = nullptr);

// ---- start-up -----------------------------------------------------------------------------------

/// Throws start_error naming mp::init if this is a spawned child mp::init never diverted.
void ensure_may_start();
/// A fresh random secret for one spawn, as hex.
std::string make_secret();
/// Writes the hello a spawned child expects.
void append_hello(std::string& out, std::string_view secret, bool pool_worker);

/// The worker loop of a pool worker: answers tasks until stop or end of stream; returns the
/// process exit code.
int run_worker(os::channel& channel, frame_reader& reader);
/// Runs one encoded call as an mp::process child; returns the exit code (1 if it threw,
/// after printing "<type>: <what>" to stderr).
int run_process_call(const char* body, std::size_t size);

/// Resolves a pool/process start method, throwing start_error if unavailable here.
start_method checked_method(start_method method);

}  // namespace multiproc::detail
