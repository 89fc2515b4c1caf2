// mp::pipe's connections, the library side: two message rings in one shared object, ring 0
// carrying end 0's messages to end 1 and ring 1 the other way (a one-way pipe uses ring 1
// only: end 1 writes, end 0 reads). Who holds each end is counted by the kernel
// (os::holder_count): every copy of an end, in any process, keeps its `hold` handle, and the
// other end watches it -- so recv() sees end of stream exactly when Python's would, once no
// process holds the other end, however they ended.
#include <multiproc/connection.hpp>

#include <mutex>
#include <optional>

#include "../../os/sync.hpp"
#include "../protocol/call.hpp"
#include "../protocol/codec.hpp"
#include "../protocol/frame.hpp"
#include "message_ring.hpp"
#include "shared_object.hpp"

namespace multiproc::detail {

namespace {
constexpr std::size_t ring_capacity = sizeof(void*) >= 8 ? std::size_t{512} << 20 : 32u << 20;
constexpr std::size_t header_size = 16384;
/// Payload layout: the duplex flag, ring 0's header, ring 1's header, then their data areas.
constexpr std::size_t duplex_flag_at = 0;
constexpr std::size_t ring_header_at[2] = {64, 64 + header_size};
constexpr std::size_t ring_data_at[2] = {64 + 2 * header_size,
                                         64 + 2 * header_size + ring_capacity};
static_assert(64 + sizeof(ring_header) <= ring_header_at[1]);
constexpr std::chrono::milliseconds liveness_slice{100};
using clock = std::chrono::steady_clock;
}  // namespace

class pipe_end {
 public:
  /// End `which` of the pipe in `object`: `hold` counts it held, `watch` sees the other end's
  /// holders.
  pipe_end(std::shared_ptr<shared_object> object, int which, os::owned_handle hold,
           os::owned_handle watch)
      : object_(std::move(object)),
        which_(which),
        hold_(std::move(hold)),
        watch_(std::move(watch)),
        rings_{message_ring(*object_, ring_header_at[0], ring_data_at[0]),
               message_ring(*object_, ring_header_at[1], ring_data_at[1])} {
    duplex_ = *reinterpret_cast<const std::uint64_t*>(object_->payload() + duplex_flag_at) != 0;
  }
  ~pipe_end() {
    // Holding no more: a reader of the other end waiting now looks again.
    hold_.reset();
    try {
      shared_lock lock(*object_);
      object_->sync().wake_all();
    } catch (...) {
    }
  }

  void send(std::uint64_t fingerprint, std::string_view bytes) {
    shared_lock lock(*object_);
    prepare_to_send_locked();
    auto& ring = outgoing();
    if (!ring.could_hold(bytes.size())) too_large(bytes.size());
    bool look_for_dead_writer = false;
    sleeper watch;
    while (ring.writing(look_for_dead_writer) || !ring.has_room(bytes.size())) {
      if (!watch.started()) {
        watch.start(
            ring.header()
                .producers_waiting);  // then one more look before sleeping: no wake-up is lost
        continue;
      }
      // The reader may be gone for good: then nothing will ever make room.
      if (os::holders_gone(watch_.get())) throw closed_error("connection: the other end is closed");
      look_for_dead_writer = wait_a_slice(lock, std::nullopt);
      check_open_locked();
    }
    ring.push(fingerprint, bytes.data(), bytes.size());
    object_->sync().wake_all();
  }

  /// Encodes `value` and sends it; a large message is encoded straight into the ring.
  void send_value(const message_codec& codec, const void* value) {
    direct_writer direct(*this);
    message_buffer encoded;
    encode_value(encoded, codec, value, &direct, direct_threshold);
    if (direct.claimed()) {
      direct.commit(codec.fingerprint);
      return;
    }
    send(codec.fingerprint, std::string_view(encoded.bytes().data(), encoded.length));
  }

  /// Takes the next message and hands its bytes to `use(first, first_size, second,
  /// second_size)` -- a large one in place, outside the lock. Throws as recv().
  template <class Use>
  void recv(std::uint64_t fingerprint, Use&& use) {
    message_buffer taken;
    std::uint64_t sent_as = 0;
    ring_read_claim claim(*object_, incoming());
    message_ring::stretches place{};
    message_ring::take_outcome outcome{};
    {
      // Every reader of a pipe takes under the lock, and wakes the writers each time.
      shared_lock lock(*object_);
      do {
        wait_readable_locked(lock, std::nullopt, true);
        bool follow_up = false;
        outcome = incoming().try_take(taken.bytes(), taken.length, sent_as, place, follow_up);
        if (follow_up) incoming().after_take_locked();
      } while (outcome != message_ring::take_outcome::taken &&
               outcome != message_ring::take_outcome::in_place);
      if (outcome == message_ring::take_outcome::in_place) claim.adopt();
      object_->sync().wake_all();
    }
    check_type(sent_as, fingerprint);
    if (outcome == message_ring::take_outcome::in_place) {
      use(place.first, place.first_size, place.second, place.second_size);
    } else {
      use(taken.bytes().data(), taken.length, nullptr, std::size_t{0});
    }
  }

  bool poll(std::optional<std::chrono::nanoseconds> timeout) {
    shared_lock lock(*object_);
    try {
      return wait_readable_locked(lock, timeout, false);
    } catch (const closed_error&) {
      if (closed_) throw;
      return true;  // end of stream: recv() would not wait (it throws at once)
    }
  }

  void close() {
    shared_lock lock(*object_);
    if (closed_) return;
    closed_ = true;
    hold_.reset();
    watch_.reset();
    object_->sync().wake_all();
  }

  std::string export_for_travel() {
    shared_lock lock(*object_);
    check_open_locked();
    std::string out = object_->export_for_travel();
    append_u64(out, travel_out(hold_.get()));
    append_u64(out, travel_out(watch_.get()));
    out.push_back(static_cast<char>(which_));
    return out;
  }
  int which() const noexcept { return which_; }
  shared_object& object() noexcept { return *object_; }

 private:
  class direct_writer final : public ring_writer {
   public:
    explicit direct_writer(pipe_end& end) : ring_writer(*end.object_, end.outgoing()), end_(end) {}

   private:
    void wait_to_claim(shared_lock& lock) override {
      end_.prepare_to_send_locked();
      bool look_for_dead_writer = false;
      while (end_.outgoing().writing(look_for_dead_writer)) {
        look_for_dead_writer = end_.wait_a_slice(lock, std::nullopt);
        end_.check_open_locked();
      }
    }
    void wait_for_room(shared_lock& lock) override {
      if (os::holders_gone(end_.watch_.get())) {
        throw closed_error("connection: the other end is closed");
      }
      end_.wait_a_slice(lock, std::nullopt);
      end_.check_open_locked();
    }
    [[noreturn]] void too_large(std::size_t at_least) override { pipe_end::too_large(at_least); }

    pipe_end& end_;
  };

  void prepare_to_send_locked() {
    check_open_locked();
    if (!sends()) throw state_error("connection: this end of a one-way pipe only receives");
  }

  [[noreturn]] static void too_large(std::size_t size) {
    throw serialization_error(serialization_error::phase::encode_message,
                              "a message of " + std::to_string(size) +
                                  " bytes or more is larger than a pipe holds (" +
                                  std::to_string(ring_capacity) + " bytes)");
  }

  static void check_type(std::uint64_t sent_as, std::uint64_t fingerprint) {
    if (sent_as == fingerprint) return;
    throw serialization_error(
        serialization_error::phase::decode_message,
        fingerprint == bytes_fingerprint
            ? "recv_bytes: the message was sent with send(), as a typed value"
        : sent_as == bytes_fingerprint
            ? "recv: the message was sent with send_bytes(), as raw bytes"
            : "recv: the message was sent as another type (type fingerprints differ)");
  }

  /// Sleeps until a wake or a slice's end (or the deadline); true if the whole slice passed
  /// (then whoever holds a claim may have died: look).
  static bool wait_a_slice(shared_lock& lock, std::optional<clock::time_point> deadline) {
    const auto before = clock::now();
    const auto slice =
        deadline ? std::min<std::chrono::nanoseconds>(liveness_slice, *deadline - clock::now())
                 : std::chrono::nanoseconds(liveness_slice);
    lock.wait(slice);
    return clock::now() - before >= liveness_slice;
  }

  bool sends() const noexcept { return duplex_ || which_ == 1; }
  bool receives() const noexcept { return duplex_ || which_ == 0; }
  // End e sends on ring e when duplex; a one-way pipe carries end 1's messages on ring 1.
  message_ring& outgoing() { return rings_[duplex_ ? which_ : 1]; }
  message_ring& incoming() { return rings_[duplex_ ? 1 - which_ : 1]; }

  void check_open_locked() const {
    if (closed_) throw closed_error("connection: used after close()");
  }

  /// Waits until a message is there (true) or `timeout` runs out (false); throws closed_error
  /// at end of stream. `to_take`: also until no other reader is reading one in place.
  bool wait_readable_locked(shared_lock& lock, std::optional<std::chrono::nanoseconds> timeout,
                            bool to_take) {
    check_open_locked();
    if (!receives()) throw state_error("connection: this end of a one-way pipe only sends");
    const auto deadline = timeout ? std::optional(clock::now() + *timeout) : std::nullopt;
    incoming().repair_locked();
    bool look_for_dead_reader = false;
    sleeper claim_wait;
    while (incoming().empty() || (to_take && incoming().reading(look_for_dead_reader))) {
      if (incoming().empty() && os::holders_gone(watch_.get())) {
        throw closed_error("connection: the other end is closed and nothing is left to read");
      }
      // Another reader holds the claim (a large message read in place): it drops it without
      // the lock, and wakes this one if registered before this last look.
      if (incoming().empty()) {
        claim_wait.stop();
      } else if (!claim_wait.started()) {
        claim_wait.start(incoming().header().consumers_waiting);
        continue;
      }
      if (deadline && clock::now() >= *deadline) return false;
      // A holder that ends wakes nobody: look again every slice.
      look_for_dead_reader = wait_a_slice(lock, deadline);
      check_open_locked();
    }
    return true;
  }

  std::shared_ptr<shared_object> object_;
  int which_;
  os::owned_handle hold_;   ///< this end is held (by this process, while open)
  os::owned_handle watch_;  ///< whether the other end is held anywhere
  bool duplex_ = true;
  message_ring rings_[2];
  bool closed_ = false;
};

std::pair<std::shared_ptr<pipe_end>, std::shared_ptr<pipe_end>> make_pipe(bool duplex) {
  auto object = std::make_shared<shared_object>(
      shared_object::create(shared_object::kind::pipe, ring_data_at[1] + ring_capacity, true));
  object->make_usable(0, ring_data_at[0]);
  *reinterpret_cast<std::uint64_t*>(object->payload() + duplex_flag_at) = duplex ? 1 : 0;
  for (int r = 0; r < 2; ++r)
    message_ring(*object, ring_header_at[r], ring_data_at[r]).initialise(ring_capacity, 0);
  os::holder_count held[2] = {os::make_holder_count(), os::make_holder_count()};
  auto first =
      std::make_shared<pipe_end>(object, 0, std::move(held[0].hold), std::move(held[1].watch));
  auto second =
      std::make_shared<pipe_end>(object, 1, std::move(held[1].hold), std::move(held[0].watch));
  return {std::move(first), std::move(second)};
}

void pipe_send(pipe_end& end, const message_codec& codec, const void* value) {
  end.send_value(codec, value);
}
void pipe_recv(pipe_end& end, const message_codec& codec, void* value) {
  end.recv(codec.fingerprint, [&](const char* first, std::size_t first_size, const char* second,
                                  std::size_t second_size) {
    decode_value(first, first_size, codec, value, second, second_size);
  });
}
void pipe_send_bytes(pipe_end& end, std::span<const std::byte> bytes) {
  end.send(bytes_fingerprint,
           std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}
std::vector<std::byte> pipe_recv_bytes(pipe_end& end) {
  std::vector<std::byte> out;
  end.recv(bytes_fingerprint, [&](const char* first, std::size_t first_size, const char* second,
                                  std::size_t second_size) {
    const auto* a = reinterpret_cast<const std::byte*>(first);
    const auto* b = reinterpret_cast<const std::byte*>(second);
    out.reserve(first_size + second_size);
    out.insert(out.end(), a, a + first_size);
    if (second_size != 0) out.insert(out.end(), b, b + second_size);
  });
  return out;
}
bool pipe_poll(pipe_end& end, std::optional<std::chrono::nanoseconds> timeout) {
  return end.poll(timeout);
}
void pipe_close(pipe_end& end) {
  end.close();
}
std::string pipe_export(pipe_end& end) {
  return end.export_for_travel();
}
std::shared_ptr<pipe_end> pipe_import(const std::string& exported) {
  // The shared object's part, then the two handles' indices and the end's number.
  constexpr std::size_t own_part = 8 + 8 + 1;
  if (exported.size() < own_part) {
    throw serialization_error(serialization_error::phase::decode_arguments,
                              "a connection arrived without its end");
  }
  const std::string_view all(exported);
  body_reader reader(all.data() + all.size() - own_part, own_part);
  os::owned_handle hold = travel_in(static_cast<std::uint32_t>(reader.u64()));
  os::owned_handle watch = travel_in(static_cast<std::uint32_t>(reader.u64()));
  const int which = reader.u8() == 0 ? 0 : 1;
  auto object = std::make_shared<shared_object>(
      shared_object::import(shared_object::kind::pipe, all.substr(0, all.size() - own_part)));
  object->make_usable(0, ring_data_at[0]);
  return std::make_shared<pipe_end>(std::move(object), which, std::move(hold), std::move(watch));
}

}  // namespace multiproc::detail
