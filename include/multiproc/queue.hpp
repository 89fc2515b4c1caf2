// multiproc — mp::queue, mp::simple_queue, mp::joinable_queue: queues between processes
// (Python's multiprocessing.Queue, SimpleQueue and JoinableQueue), typed.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include <multiproc/config.hpp>
#include <multiproc/detail/message.hpp>
#include <multiproc/detail/timeout.hpp>
#include <multiproc/errors.hpp>

namespace multiproc {

namespace detail {
class queue_core;
MULTIPROC_API std::shared_ptr<queue_core> make_queue(std::size_t maxsize);
/// Encodes `*value` and puts it; false if there was no room within `timeout` (nullopt: none).
MULTIPROC_API bool queue_put(queue_core& q, const message_codec& codec, const void* value,
                             std::optional<std::chrono::nanoseconds> timeout);
/// Takes the oldest item and decodes it into `*value`; false if none came within `timeout`.
MULTIPROC_API bool queue_get(queue_core& q, const message_codec& codec, void* value,
                             std::optional<std::chrono::nanoseconds> timeout);
MULTIPROC_API std::size_t queue_size(queue_core& q);
MULTIPROC_API bool queue_full(queue_core& q);
MULTIPROC_API void queue_close(queue_core& q);
MULTIPROC_API void queue_task_done(queue_core& q);
MULTIPROC_API bool queue_join(queue_core& q, std::optional<std::chrono::nanoseconds> timeout);
MULTIPROC_API std::string queue_export(queue_core& q);
MULTIPROC_API std::shared_ptr<queue_core> queue_import(const std::string& exported);

/// A timeout as the queue functions take it: nullopt for "no deadline".
template <class Rep, class Period>
std::optional<std::chrono::nanoseconds> queue_timeout(std::chrono::duration<Rep, Period> t) {
  const auto saturated = saturated_timeout(t);
  if (saturated >= no_deadline_beyond) return std::nullopt;
  return saturated;
}
}  // namespace detail

/// A queue of T between processes (Python's multiprocessing.Queue). A handle: copies refer to
/// the same queue. It travels as an argument of mp::process, of a pool task and of a pool
/// initializer, on every start method; it cannot travel inside a queue or pipe, nor as a
/// task's result (mp::serialization_error).
///
/// Items live in memory every holder maps (nothing is named; it vanishes with the last holder,
/// however it ends): put() returns once the item is there, so a process that puts and exits
/// loses nothing, and no process ever waits at exit for its items to be read (Python's
/// join_thread() has nothing to wait for, cancel_join_thread() nothing to cancel). One
/// producer's items arrive in order; with many producers and consumers none is lost or
/// duplicated; a producer killed in the middle of put() leaves the whole item or none. Items
/// are encoded with cereal, and each carries its type's fingerprint. Up to 1 GiB of encoded
/// items may wait (memory is taken as used and given back as read); put() waits beyond that.
/// The queue's memory is made on first use (or when it first travels). Thread-safe.
///
/// End of stream: get() throws mp::closed_error when the queue is empty and no other process
/// could still put into it (a queue never handed to another process just waits, as Python's). A
/// process counts as a possible producer from the moment the queue is handed to it (it made it, or
/// start() or the pool passed it over) until it closes it, drops it, or ends -- or, if it never put
/// anything, until it first takes from it (a consumer keeps no other consumer waiting). A call
/// carrying the queue counts while it waits to run, so a consumer never sees end of stream before a
/// producer it started has begun. The caller's own process does not count against it (threads of
/// one process would share a std queue instead). A producer killed from outside is noticed within
/// about 100 ms. So: producers close (or end), consumers drain, and then get() throws
/// mp::closed_error.
template <class T>
class queue {
  static_assert(is_transferable_v<T>,
                "multiproc: a queue's item type must be serialisable (see mp::process)");

 public:
  /// A queue holding at most `maxsize` items (0: no limit but memory). Throws nothing (the
  /// shared memory is made on first use, which may throw std::system_error).
  explicit queue(std::size_t maxsize = 0) : core_(detail::make_queue(maxsize)) {}

  /// Puts `item`, waiting while the queue is full. Throws mp::closed_error after close(),
  /// mp::serialization_error if `item` cannot be encoded or is larger than a queue holds.
  void put(const T& item) { (void)put_for(item, std::nullopt); }
  /// As put(), waiting at most `timeout` for room; false if there was none in time (timeouts
  /// saturate as in mp::process::join(timeout)).
  template <class Rep, class Period>
  bool put(const T& item, std::chrono::duration<Rep, Period> timeout) {
    return put_for(item, detail::queue_timeout(timeout));
  }
  /// As put(), without waiting; false if the queue is full.
  bool put_nowait(const T& item) { return put_for(item, std::chrono::nanoseconds(0)); }

  /// Takes the oldest item, waiting for one. Throws mp::closed_error at end of stream (see
  /// above) or after close(); mp::serialization_error if the item was put as another type
  /// (it is taken out: it could never be read as a T) or cannot be decoded.
  T get() { return *get_for(std::nullopt); }
  /// As get(), waiting at most `timeout`; nullopt if nothing came in time (Python's Empty).
  template <class Rep, class Period>
  std::optional<T> get(std::chrono::duration<Rep, Period> timeout) {
    return get_for(detail::queue_timeout(timeout));
  }
  /// As get(), without waiting; nullopt if the queue is empty.
  std::optional<T> get_nowait() { return get_for(std::chrono::nanoseconds(0)); }

  /// The number of items in the queue now (other processes may change it at once, as in
  /// Python).
  std::size_t qsize() const { return detail::queue_size(*core_); }
  /// qsize() == 0, at this instant.
  bool empty() const { return qsize() == 0; }
  /// True if put_nowait() would fail now for lack of room (only with a maxsize).
  bool full() const { return detail::queue_full(*core_); }
  /// This process is done with the queue (Python: "no more data will be put"): it stops
  /// counting as a holder, and every later use of the queue here throws mp::closed_error.
  /// Items it put stay for the consumers. Idempotent.
  void close() { detail::queue_close(*core_); }

  /// cereal: how a queue travels as an argument (its handles join the call, which counts for
  /// its receiver, see above). Throws mp::serialization_error anywhere else (inside a queue or
  /// pipe, or in a task's result).
  template <class Archive>
  void save(Archive& archive) const {
    archive(detail::queue_export(*core_));
  }
  /// cereal: the receiving side of save(), in the process that runs the call. Throws
  /// mp::serialization_error if the queue cannot be opened here.
  template <class Archive>
  void load(Archive& archive) {
    std::string exported;
    archive(exported);
    core_ = detail::queue_import(exported);
  }

 protected:
  /// put() with `timeout` (nullopt: none); false if there was no room in time.
  bool put_for(const T& item, std::optional<std::chrono::nanoseconds> timeout) {
    return detail::queue_put(*core_, detail::codec_of<T>(), &item, timeout);
  }
  /// get() with `timeout` (nullopt: none); nullopt if nothing came in time.
  std::optional<T> get_for(std::optional<std::chrono::nanoseconds> timeout) {
    std::optional<T> value(std::in_place);
    if (!detail::queue_get(*core_, detail::codec_of<T>(), &*value, timeout)) return std::nullopt;
    return value;
  }
  /// The queue itself, shared by every copy of this handle in this process.
  std::shared_ptr<detail::queue_core> core_;
};

/// Python's SimpleQueue: put, get, empty, close (no size limit, no timeouts). The same
/// transport and rules as mp::queue.
template <class T>
class simple_queue {
 public:
  simple_queue() = default;
  /// As queue::put().
  void put(const T& item) { queue_.put(item); }
  /// As queue::get().
  T get() { return queue_.get(); }
  /// As queue::empty().
  bool empty() const { return queue_.empty(); }
  /// As queue::close().
  void close() { queue_.close(); }

  /// cereal: travels as mp::queue does.
  template <class Archive>
  void serialize(Archive& archive) {
    archive(queue_);
  }

 private:
  queue<T> queue_;
};

/// Python's JoinableQueue: a queue that also counts the items taken and not yet reported done,
/// so a producer can wait until every item it put was processed.
template <class T>
class joinable_queue : public queue<T> {
 public:
  using queue<T>::queue;
  /// Reports that an item taken by get() is processed. Throws mp::state_error if called more
  /// times than items were taken.
  void task_done() { detail::queue_task_done(*this->core_); }
  /// Waits until every item put was taken and reported done.
  void join() { (void)detail::queue_join(*this->core_, std::nullopt); }
  /// As join(), waiting at most `timeout`; false if items were still unfinished.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return detail::queue_join(*this->core_, detail::queue_timeout(timeout));
  }
};

}  // namespace multiproc
