// multiproc — mp::pipe and mp::connection: two ends that exchange messages between processes
// (Python's multiprocessing.Pipe and Connection).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <multiproc/config.hpp>
#include <multiproc/detail/message.hpp>
#include <multiproc/detail/timeout.hpp>
#include <multiproc/errors.hpp>

namespace multiproc {

/// The type of mp::forever.
struct forever_t {
  explicit constexpr forever_t() = default;
};
/// Waits without a deadline where a timeout is taken: `conn.poll(mp::forever)`.
inline constexpr forever_t forever{};

namespace detail {
class pipe_end;
MULTIPROC_API std::pair<std::shared_ptr<pipe_end>, std::shared_ptr<pipe_end>> make_pipe(
    bool duplex);
/// Encodes `*value` and sends it.
MULTIPROC_API void pipe_send(pipe_end& end, const message_codec& codec, const void* value);
/// Receives the next message, decoding it into `*value`.
MULTIPROC_API void pipe_recv(pipe_end& end, const message_codec& codec, void* value);
MULTIPROC_API void pipe_send_bytes(pipe_end& end, std::span<const std::byte> bytes);
MULTIPROC_API std::vector<std::byte> pipe_recv_bytes(pipe_end& end);
MULTIPROC_API bool pipe_poll(pipe_end& end, std::optional<std::chrono::nanoseconds> timeout);
MULTIPROC_API void pipe_close(pipe_end& end);
MULTIPROC_API std::string pipe_export(pipe_end& end);
MULTIPROC_API std::shared_ptr<pipe_end> pipe_import(const std::string& exported);
}  // namespace detail

/// One end of a pipe (Python's Connection). A handle: copies refer to the same end. It travels
/// as an argument of mp::process, of a pool task and of a pool initializer, on every start
/// method (its shared memory and, on Windows, its kernel objects are passed to the process
/// that runs the call); it cannot travel inside a queue or pipe, nor as a task's result
/// (mp::serialization_error). Messages arrive whole and in order; each is received by exactly
/// one receiver. Sending waits only while the pipe already holds 512 MiB of messages.
/// Thread-safe. Every member throws mp::state_error on a default-constructed connection.
class connection {
 public:
  /// An empty connection, only to be assigned one (e.g. by decoding an argument).
  connection() = default;

  /// Sends `value` (any serialisable type). Throws mp::closed_error after close() or once
  /// every holder of the other end is gone while the pipe is full, mp::state_error on the
  /// receiving end of a one-way pipe, mp::serialization_error if `value` cannot be encoded.
  template <class T>
  void send(const T& value) {
    static_assert(is_transferable_v<T>, "multiproc: connection::send needs a serialisable type");
    detail::pipe_send(end(), detail::codec_of<T>(), &value);
  }
  /// Waits for the next message and returns it as a T. Throws mp::closed_error once every
  /// holder of the other end closed it or ended and nothing is left to read (Python's
  /// EOFError), or after close(); mp::serialization_error if the message was sent as another
  /// type (it is taken out: it could never be received as a T) or cannot be decoded;
  /// mp::state_error on the sending end of a one-way pipe.
  template <class T>
  T recv() {
    static_assert(is_transferable_v<T>, "multiproc: connection::recv needs a serialisable type");
    T value{};
    detail::pipe_recv(end(), detail::codec_of<T>(), &value);
    return value;
  }
  /// Sends raw bytes, received by recv_bytes() only. Throws as send().
  void send_bytes(std::span<const std::byte> bytes) { detail::pipe_send_bytes(end(), bytes); }
  /// Receives a message sent by send_bytes(). Throws as recv() (a message sent by send() is a
  /// mp::serialization_error).
  std::vector<std::byte> recv_bytes() { return detail::pipe_recv_bytes(end()); }
  /// True if recv() would not wait: a message is there, or the other end is gone (recv()
  /// then throws mp::closed_error). Never waits. Throws mp::closed_error after close().
  bool poll() { return detail::pipe_poll(end(), std::chrono::nanoseconds(0)); }
  /// As poll(), waiting at most `timeout` for a message (the saturation rules of
  /// mp::process::join(timeout): zero or less polls, 100 years or more waits for ever).
  template <class Rep, class Period>
  bool poll(std::chrono::duration<Rep, Period> timeout) {
    const auto t = detail::saturated_timeout(timeout);
    return detail::pipe_poll(end(), t >= detail::no_deadline_beyond
                                        ? std::nullopt
                                        : std::optional<std::chrono::nanoseconds>(t));
  }
  /// Waits until recv() would not wait; returns true.
  bool poll(forever_t) { return detail::pipe_poll(end(), std::nullopt); }
  /// Closes this end in this process (every copy here): it no longer counts as a holder, so
  /// once no process holds it the other end's recv() sees end of stream. Later uses throw
  /// mp::closed_error. Idempotent.
  void close() { detail::pipe_close(end()); }

  /// cereal: how a connection travels as an argument (its handles join the call). Throws
  /// mp::serialization_error anywhere else (inside a queue or pipe, or in a task's result), or
  /// mp::closed_error after close().
  template <class Archive>
  void save(Archive& archive) const {
    archive(detail::pipe_export(end()));
  }
  /// cereal: the receiving side of save(), in the process that runs the call. Throws
  /// mp::serialization_error if the end cannot be opened here.
  template <class Archive>
  void load(Archive& archive) {
    std::string exported;
    archive(exported);
    end_ = detail::pipe_import(exported);
  }

  /// Used by mp::pipe().
  explicit connection(std::shared_ptr<detail::pipe_end> end) : end_(std::move(end)) {}

 private:
  detail::pipe_end& end() const {
    if (!end_) throw state_error("connection: empty (default-constructed) connection");
    return *end_;
  }
  std::shared_ptr<detail::pipe_end> end_;
};

/// Python's Pipe(): two connected ends. Duplex (the default): each end sends and receives.
/// `pipe(false)` returns {reader, writer}: the first only receives, the second only sends.
/// Nothing is named in the file system or a global namespace: the pipe vanishes with the last
/// process holding an end. Throws std::system_error if the system refuses the shared memory.
inline std::pair<connection, connection> pipe(bool duplex = true) {
  auto [first, second] = detail::make_pipe(duplex);
  return {connection(std::move(first)), connection(std::move(second))};
}

}  // namespace multiproc
