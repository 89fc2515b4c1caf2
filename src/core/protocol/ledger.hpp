// The claim ledger: one word per pool worker, in memory the pool and the worker share, that
// says which of the tasks sent to the worker it has started -- and lets the pool take back the
// ones it has not, so a task never waits behind a blocked one while another worker is free.
//
// Tasks sent to a worker are numbered 1, 2, ... in the order sent (the worker counts the task
// frames it reads; the pipe keeps the order). Before running task n the worker claims it; the
// pool takes back by setting the hold bit, after which the worker claims nothing: every task
// frame it reads while held is answered with `skipped`. One compare-and-swap decides each race
// between a claim and a take-back, so a task runs exactly once, here or elsewhere.
//
// The pool gives a worker its word only when it first sends it a second task before the first
// is answered (before that, there is nothing to take back): the ledger frame then goes ahead of
// that task, and every task sent before it counts as claimed.
//
// Frames: `ledger` (parent -> worker: where its word is) and `skipped` (worker -> parent: a
// task it was sent after the pool took it back).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "frame.hpp"

namespace multiproc::detail {

/// Bytes of shared memory per worker: a cache line, so workers do not share one.
inline constexpr std::size_t ledger_stride = 64;

/// A view of one worker's word in shared memory (which the caller keeps mapped).
class claim_word {
 public:
  explicit claim_word(char* at) noexcept
      : word_(reinterpret_cast<std::atomic<std::uint64_t>*>(at)) {}

  /// Worker: claims task `number`; false if the pool holds this worker (the task was taken
  /// back: do not run it).
  bool claim(std::uint64_t number) noexcept;
  /// Pool: from now on the worker claims nothing. Returns the number of the last task it
  /// claimed: every later one sent to it will never run there.
  std::uint64_t hold() noexcept;
  /// Pool: lets the worker claim again (once it has answered every task taken back).
  void release() noexcept;
  /// The number of the last task the worker claimed (0: none yet).
  std::uint64_t last_claimed() const noexcept;
  /// Pool, before sending the ledger frame: the worker will have read `tasks_before` tasks by
  /// then, each claimed as far as the pool can tell (the one it may be running counts as
  /// started, as without a ledger).
  void start_at(std::uint64_t tasks_before) noexcept;

 private:
  static constexpr std::uint64_t held = std::uint64_t{1} << 63;
  std::atomic<std::uint64_t>* word_;
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
              "the ledger needs a lock-free 64-bit atomic: it lives in memory two processes share");

/// Where a worker's word is: a shared block the worker opens, and the word's offset in it.
struct ledger_location {
  std::uint64_t token = 0;
  std::uint64_t size = 0;
  std::uint64_t offset = 0;
};
void append_ledger(std::string& out, const ledger_location& where);
/// Throws std::runtime_error if the frame is malformed.
ledger_location read_ledger(const frame_header& header, const char* body);

/// Appends the answer to a task that was taken back: its id, nothing else.
void append_skipped(std::string& out, std::uint64_t id);
/// Appends the worker's answer to a ledger frame it could not act on (it exits after it,
/// having started nothing more): the pool then gives no worker a second task at a time.
void append_ledger_refused(std::string& out);

}  // namespace multiproc::detail
