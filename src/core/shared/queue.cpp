// mp::queue, mp::simple_queue and mp::joinable_queue, the library side: one message ring in
// a shared object. End of stream for get(): the queue is empty and no other process could
// still put (holder_table in message_ring.hpp). A process counts from the moment the queue is
// handed to it until it closes or drops it or ends -- or, if it never put anything, until it
// first takes from it (a consumer, which must not keep other consumers waiting). So that no
// process is ever missed -- one just started with the queue as an argument that has not
// opened it yet -- the sender counts the receiver itself: every call that carries the queue
// reserves a count while it waits, which passes to its receiver on delivery (before
// start() returns, or when the pool sends the task) and comes back if the call does.
#include <multiproc/queue.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>

#include "../../os/sync.hpp"
#include "../protocol/call.hpp"
#include "../protocol/codec.hpp"
#include "message_ring.hpp"
#include "shared_object.hpp"

namespace multiproc::detail {

namespace {
/// Bytes of messages a queue can hold: virtual memory only until used (and given back as
/// read), so the bound only matters to a producer far ahead of its consumers.
constexpr std::size_t queue_capacity = sizeof(void*) >= 8 ? std::size_t{1} << 30 : 64u << 20;
constexpr std::size_t ring_header_at = 0;
constexpr std::size_t ring_data_at = 16384;  // after the ring header and its holder table
static_assert(sizeof(ring_header) <= ring_data_at);
/// Looks at an empty ring before a get takes the lock to sleep (a microsecond or two): a
/// producer's next item usually comes within it, and a get that takes the lock makes the
/// producers wait for it (100k items: 31 ms with 1 look, 18 ms with 8 to 256).
constexpr int fast_looks = 32;
/// A wait for a holder that may have died without a word wakes this often to look.
constexpr std::chrono::milliseconds liveness_slice{100};

using clock = std::chrono::steady_clock;

/// Time left until `deadline` (nullopt: none), for one wait of at most `slice`.
std::optional<std::chrono::nanoseconds> next_wait(std::optional<clock::time_point> deadline,
                                                  std::chrono::nanoseconds slice) {
  if (!deadline) return slice;
  return std::min<std::chrono::nanoseconds>(slice, *deadline - clock::now());
}
}  // namespace

class queue_core : public std::enable_shared_from_this<queue_core> {
 public:
  explicit queue_core(std::size_t maxsize) : maxsize_(maxsize) {}
  /// A queue that arrived as an argument: this process holds it now, taking over the count
  /// its sender made for it.
  explicit queue_core(shared_object object) : object_(std::move(object)) {
    ring_.emplace(*object_, ring_header_at, ring_data_at);
    shared_lock lock(*object_);
    const os::process_stamp self = os::this_process_stamp();
    ring_->header().holders.add(self, true);
    holder_ = self;
    counting_ = true;
  }
  ~queue_core() {
    if (!object_) return;
    try {
      shared_lock lock(*object_);
      stop_holding_locked();
      object_->sync().wake_all();
    } catch (...) {
    }
  }

  bool put(const message_codec& codec, const void* value,
           std::optional<std::chrono::nanoseconds> timeout) {
    ensure_created();
    const auto deadline = deadline_of(timeout);
    // Encoded before the lock is taken: no user code under it. A large item is encoded
    // straight into the ring, under the writer claim.
    direct_writer direct(*this, deadline);
    message_buffer encoded;
    try {
      encode_value(encoded, codec, value, &direct, direct_threshold);
      if (direct.claimed()) {
        direct.commit(codec.fingerprint);
        return true;
      }
    } catch (const timed_out&) {
      return false;
    }
    const std::string_view bytes(encoded.bytes().data(), encoded.length);
    shared_lock lock(*object_);
    prepare_to_put_locked();
    if (!ring_->could_hold(bytes.size())) too_large(bytes.size());
    bool look_for_dead_writer = false;
    sleeper watch;
    while (ring_->writing(look_for_dead_writer) || !ring_->has_room(bytes.size())) {
      if (!watch.started()) {
        watch.start(
            ring_->header()
                .producers_waiting);  // then one more look before sleeping: no wake-up is lost
        continue;
      }
      if (expired(deadline)) return false;
      look_for_dead_writer = wait_a_slice(lock, deadline);
      check_open_locked();
    }
    ring_->push(codec.fingerprint, bytes.data(), bytes.size());
    ++ring_->header().unfinished;
    object_->sync().wake_all();
    return true;
  }

  /// False on timeout; throws closed_error at end of stream, serialization_error on a message
  /// of another type (which is taken out: it can never be read as this one).
  bool get(const message_codec& codec, void* value,
           std::optional<std::chrono::nanoseconds> timeout) {
    ensure_created();
    message_buffer taken;
    std::uint64_t sent_as = 0;
    ring_read_claim claim(*object_, *ring_);
    message_ring::stretches place{};
    const auto outcome = take(taken, sent_as, place, timeout);
    if (outcome == message_ring::take_outcome::empty) return false;  // timed out
    // Decoded with no lock held: no user code under it.
    if (outcome == message_ring::take_outcome::in_place) {
      claim.adopt();  // the claim ends with this call, removing the item, however it ends
      check_type(place.fingerprint, codec.fingerprint);
      decode_value(place.first, place.first_size, codec, value, place.second, place.second_size);
      return true;
    }
    check_type(sent_as, codec.fingerprint);
    decode_value(taken.bytes().data(), taken.length, codec, value);
    return true;
  }

 private:
  /// Thrown by a direct write whose put timed out (not an exception users see).
  struct timed_out {};

  class direct_writer final : public ring_writer {
   public:
    direct_writer(queue_core& queue, std::optional<clock::time_point> deadline)
        : ring_writer(*queue.object_, *queue.ring_), queue_(queue), deadline_(deadline) {}

   private:
    void wait_to_claim(shared_lock& lock) override {
      queue_.prepare_to_put_locked();
      auto& ring = *queue_.ring_;
      bool look_for_dead_writer = false;
      sleeper watch;
      while (ring.writing(look_for_dead_writer) || !ring.has_room(0)) {
        if (!watch.started()) {
          watch.start(ring.header().producers_waiting);  // then one more look before sleeping
          continue;
        }
        if (expired(deadline_)) throw timed_out{};
        look_for_dead_writer = queue_.wait_a_slice(lock, deadline_);
        queue_.check_open_locked();
      }
    }
    void wait_for_room(shared_lock& lock) override {
      if (expired(deadline_)) throw timed_out{};
      queue_.wait_a_slice(lock, deadline_);
      queue_.check_open_locked();
    }
    [[noreturn]] void too_large(std::size_t at_least) override { queue_core::too_large(at_least); }
    void committed_locked() override { ++queue_.ring_->header().unfinished; }

    queue_core& queue_;
    std::optional<clock::time_point> deadline_;
  };

  void prepare_to_put_locked() {
    check_open_locked();
    hold_if_forked_locked();
    count_as_producer_locked();
  }

  [[noreturn]] static void too_large(std::size_t size) {
    throw serialization_error(serialization_error::phase::encode_message,
                              "an item of " + std::to_string(size) +
                                  " bytes or more is larger than a queue holds (" +
                                  std::to_string(queue_capacity) + " bytes)");
  }

  /// Sleeps until a wake or a slice's end (or the deadline); true if the whole slice passed
  /// (then whoever holds a claim may have died: look).
  bool wait_a_slice(shared_lock& lock, std::optional<clock::time_point> deadline) {
    const auto before = clock::now();
    lock.wait(next_wait(deadline, liveness_slice));
    return clock::now() - before >= liveness_slice;
  }

  /// Takes the oldest item: taken (into `taken`), in_place (a large one, under the reader
  /// claim, described by `place`), or empty when `timeout` ran out. Throws closed_error at end
  /// of stream.
  message_ring::take_outcome take(message_buffer& taken, std::uint64_t& sent_as,
                                  message_ring::stretches& place,
                                  std::optional<std::chrono::nanoseconds> timeout) {
    // Without the lock, once this process's first get has settled what it holds: a consumer
    // and the producers then never wait for each other. An empty ring is watched a little
    // before sleeping: a producer's next item usually comes within it.
    if (settled_pid_.load(std::memory_order_relaxed) == os::this_process_stamp().pid) {
      for (int look = 0; look < fast_looks; ++look) {
        const auto outcome = try_take(taken, sent_as, place);
        if (outcome == message_ring::take_outcome::taken ||
            outcome == message_ring::take_outcome::in_place) {
          return outcome;
        }
        os::cpu_relax();
      }
    }
    return take_slowly(taken, sent_as, place, timeout);
  }

  message_ring::take_outcome try_take(message_buffer& taken, std::uint64_t& sent_as,
                                      message_ring::stretches& place) {
    bool follow_up = false;
    const auto outcome = ring_->try_take(taken.bytes(), taken.length, sent_as, place, follow_up);
    if (follow_up) {
      shared_lock lock(*object_);
      ring_->after_take_locked();
      object_->sync().wake_all();  // a producer waits for room, or a consumer for the claim
    }
    return outcome;
  }

  message_ring::take_outcome take_slowly(message_buffer& taken, std::uint64_t& sent_as,
                                         message_ring::stretches& place,
                                         std::optional<std::chrono::nanoseconds> timeout) {
    const auto deadline = deadline_of(timeout);
    shared_lock lock(*object_);
    check_open_locked();
    hold_if_forked_locked();
    if (!has_put_) stop_holding_locked();  // a consumer: it keeps no other consumer waiting
    settled_pid_.store(holder_->pid, std::memory_order_relaxed);
    ring_->repair_locked();
    bool look_for_dead = false;
    sleeper watch;
    for (;;) {
      const bool empty = ring_->empty();
      if (!empty && !ring_->reading(look_for_dead)) {
        bool follow_up = false;
        const auto outcome =
            ring_->try_take(taken.bytes(), taken.length, sent_as, place, follow_up);
        if (follow_up) {
          ring_->after_take_locked();
          object_->sync().wake_all();
        }
        if (outcome == message_ring::take_outcome::taken ||
            outcome == message_ring::take_outcome::in_place) {
          return outcome;
        }
        continue;  // another consumer was first: look again
      }
      // A queue never handed to another process has no other side to end: it just waits.
      if (empty && ring_->header().shared != 0 &&
          !ring_->header().holders.others_hold(os::this_process_stamp(), look_for_dead)) {
        throw closed_error("queue: empty, and no other process holds it any more");
      }
      // Items come with a producer's wake-up under this lock. The claim is dropped without
      // it: waiting for the claim, this consumer registers first, then looks once more.
      if (empty) {
        watch.stop();  // takes by others need not wake it
      } else if (!watch.started()) {
        watch.start(ring_->header().consumers_waiting);
        continue;
      }
      if (expired(deadline)) return message_ring::take_outcome::empty;
      // A holder that dies wakes nobody: after a slice asleep, look whether one did.
      look_for_dead = wait_a_slice(lock, deadline);
      check_open_locked();
    }
  }

  static void check_type(std::uint64_t sent_as, std::uint64_t expected) {
    if (sent_as == expected) return;
    throw serialization_error(
        serialization_error::phase::decode_message,
        "the item was put as another type than this queue's (type fingerprints differ)");
  }

 public:
  std::size_t size() {
    ensure_created();
    repair_if_needed();
    return static_cast<std::size_t>(ring_->items());
  }
  bool full() {
    ensure_created();
    repair_if_needed();
    const std::uint64_t maxsize = ring_->header().maxsize;
    return maxsize != 0 && ring_->items() >= maxsize;
  }

  /// The counts read without the lock: a producer killed half-way through an append may have
  /// left one of them to put right (the next producer would; a count asked for now should be).
  void repair_if_needed() {
    if (ring_->header().intent.load(std::memory_order_acquire) == 0) return;
    shared_lock lock(*object_);
    ring_->repair_locked();
  }

  void close() {
    ensure_created();
    shared_lock lock(*object_);
    if (closed_) return;
    closed_ = true;
    settled_pid_.store(0, std::memory_order_relaxed);
    stop_holding_locked();
    object_->sync().wake_all();  // consumers elsewhere may now see the end of the stream
  }

  void task_done() {
    ensure_created();
    shared_lock lock(*object_);
    auto& header = ring_->header();
    if (header.unfinished <= ring_->items()) {
      throw state_error("joinable_queue::task_done: called more times than items were taken");
    }
    if (--header.unfinished == 0) object_->sync().wake_all();
  }

  bool join(std::optional<std::chrono::nanoseconds> timeout) {
    ensure_created();
    shared_lock lock(*object_);
    const auto deadline = deadline_of(timeout);
    while (ring_->header().unfinished != 0) {
      if (expired(deadline)) return false;
      lock.wait(next_wait(deadline, std::chrono::hours(1)));
    }
    return true;
  }

  /// Into a call being encoded: the handles, and a ticket that counts the call as holding
  /// the queue while it lives and its receiver once it is delivered.
  std::string export_for_travel() {
    ensure_created();
    std::string exported = object_->export_for_travel();
    travel_ticket_out(std::make_unique<ticket>(shared_from_this()));
    return exported;
  }

 private:
  class ticket : public travel_ticket {
   public:
    explicit ticket(std::shared_ptr<queue_core> queue)
        : queue_(std::move(queue)), exporter_(os::this_process_stamp()) {
      shared_lock lock(*queue_->object_);
      queue_->ring_->header().shared = 1;
      queue_->ring_->header().holders.reserve(exporter_, +1);
    }
    ~ticket() override {
      // Only in the process that made it (a copy inherited through mp::fork() is not).
      if (receiver_ || !(os::this_process_stamp() == exporter_)) return;
      try {
        shared_lock lock(*queue_->object_);
        queue_->ring_->header().holders.reserve(exporter_, -1);
        queue_->object_->sync().wake_all();
      } catch (...) {
      }
    }
    void delivered_to(const os::process_stamp& receiver) override {
      if (receiver_) return;
      shared_lock lock(*queue_->object_);
      auto& holders = queue_->ring_->header().holders;
      holders.deliver(receiver);
      holders.reserve(exporter_, -1);
      receiver_ = receiver;
    }
    void returned() override {
      if (!receiver_) return;
      shared_lock lock(*queue_->object_);
      auto& holders = queue_->ring_->header().holders;
      holders.reserve(exporter_, +1);
      holders.undeliver(*receiver_);
      receiver_.reset();
    }

   private:
    std::shared_ptr<queue_core> queue_;
    os::process_stamp exporter_;
    /// Where the call went, once delivered: the count is the receiver's then, not the call's.
    std::optional<os::process_stamp> receiver_;
  };

  void ensure_created() {
    std::call_once(created_, [&] {
      if (object_) return;  // imported
      object_ =
          shared_object::create(shared_object::kind::queue, ring_data_at + queue_capacity, true);
      ring_.emplace(*object_, ring_header_at, ring_data_at);
      ring_->initialise(queue_capacity, maxsize_);
      const os::process_stamp self = os::this_process_stamp();
      ring_->header().holders.add(self, false);
      holder_ = self;
      counting_ = true;
    });
  }

  void check_open_locked() const {
    if (closed_) throw closed_error("queue: used after close()");
  }

  /// A copy inherited through mp::fork() belongs to a new process, which has put nothing yet
  /// and counts only once it does.
  void hold_if_forked_locked() {
    const os::process_stamp self = os::this_process_stamp();
    if (holder_ && *holder_ == self) return;
    holder_ = self;
    counting_ = false;
    has_put_ = false;
  }
  void count_as_producer_locked() {
    has_put_ = true;
    if (counting_) return;
    ring_->header().holders.add(*holder_, false);
    counting_ = true;
  }
  void stop_holding_locked() {
    if (!counting_ || !holder_ || !(*holder_ == os::this_process_stamp())) return;
    ring_->header().holders.remove(*holder_);
    counting_ = false;
  }

  static std::optional<clock::time_point> deadline_of(std::optional<std::chrono::nanoseconds> t) {
    if (!t) return std::nullopt;
    return clock::now() + *t;
  }
  static bool expired(std::optional<clock::time_point> deadline) {
    return deadline && clock::now() >= *deadline;
  }

  std::size_t maxsize_ = 0;
  std::once_flag created_;
  std::optional<shared_object> object_;
  std::optional<message_ring> ring_;
  /// The process this object counts for (the one it was made or opened in), whether it
  /// counts now, and whether it ever put.
  std::optional<os::process_stamp> holder_;
  bool counting_ = false;
  bool has_put_ = false;
  bool closed_ = false;
  /// The process whose gets may take without the lock (0: none yet, or closed).
  std::atomic<std::int64_t> settled_pid_{0};
};

std::shared_ptr<queue_core> make_queue(std::size_t maxsize) {
  return std::make_shared<queue_core>(maxsize);
}
bool queue_put(queue_core& q, const message_codec& codec, const void* value,
               std::optional<std::chrono::nanoseconds> timeout) {
  return q.put(codec, value, timeout);
}
bool queue_get(queue_core& q, const message_codec& codec, void* value,
               std::optional<std::chrono::nanoseconds> timeout) {
  return q.get(codec, value, timeout);
}
std::size_t queue_size(queue_core& q) {
  return q.size();
}
bool queue_full(queue_core& q) {
  return q.full();
}
void queue_close(queue_core& q) {
  q.close();
}
void queue_task_done(queue_core& q) {
  q.task_done();
}
bool queue_join(queue_core& q, std::optional<std::chrono::nanoseconds> timeout) {
  return q.join(timeout);
}
std::string queue_export(queue_core& q) {
  return q.export_for_travel();
}
std::shared_ptr<queue_core> queue_import(const std::string& exported) {
  return std::make_shared<queue_core>(shared_object::import(shared_object::kind::queue, exported));
}

}  // namespace multiproc::detail
