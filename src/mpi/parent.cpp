// Rank 0's side of the mpi start method: which worker ranks are free, the bridge that carries
// each session's channel to its rank, and the worker ranks' release when the program ends.
//
// A pool (or mp::process) started with start_method::mpi gets an ordinary local channel, so
// the whole pool/worker protocol runs unchanged: two bridge threads per session hold the other
// end and forward its bytes to and from the rank as MPI messages (src/mpi/rank.cpp mirrors
// them). Only what cannot cross hosts differs, and the pool knows it (remote_workers_).
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include <multiproc/errors.hpp>

#include "../core/protocol/call.hpp"
#include "../core/protocol/task.hpp"
#include "../os/code_identity.hpp"
#include "../os/system.hpp"
#include "mpi.hpp"
#include "parent.hpp"
#include "session.hpp"
#include "transport.hpp"

namespace multiproc::detail::mpi {

namespace {

/// How long a start waits for a rank that is finishing its previous session (a worker that
/// retired under maxtasksperchild is replaced by the rank it just left).
constexpr auto release_wait = std::chrono::seconds(30);

[[noreturn]] void abort_job(const char* why) {
  std::fprintf(stderr, "multiproc: %s; aborting the MPI job\n", why);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

/// A worker rank as the pool sees it: an os::child whose end is the session's end.
class rank_child final : public os::remote_child {
 public:
  rank_child(int rank, std::uint64_t session) : rank_(rank), session_(session) {}
  bool wait(std::optional<std::chrono::nanoseconds> timeout) override {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto ended = [&] { return code_.has_value(); };
    if (!timeout) {
      ended_.wait(lock, ended);
    } else {
      ended_.wait_for(lock, std::max(*timeout, std::chrono::nanoseconds::zero()), ended);
    }
    return code_.has_value();
  }
  std::optional<int> exit_code() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return code_;
  }
  // A rank runs its calls in its own main thread, which nothing can interrupt short of ending
  // the rank (and with it, under MPI, the job): the session ends once the running call
  // returns; its result is dropped.
  void terminate() noexcept override { request('t'); }
  void kill() noexcept override { request('k'); }
  void ended(int code) {
    std::lock_guard<std::mutex> lock(mutex_);
    code_ = code;
    ended_.notify_all();
  }

 private:
  void request(char how) noexcept {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (code_ || asked_) return;
      asked_ = true;
    }
    try {
      transport::instance().send(rank_, tag::terminate, encode_session(session_, how));
    } catch (const std::exception&) {
      // MPI failed: the bridge threads meet the same failure and abort the job.
    }
  }
  const int rank_;
  const std::uint64_t session_;
  mutable std::mutex mutex_;
  std::condition_variable ended_;
  std::optional<int> code_;
  bool asked_ = false;
};

struct rank_slot {
  bool busy = false;
  /// Its role ended (the end message came): the rank is free once its bridges are done, a
  /// moment later. Set before the pool can see the end, so a pool that starts right after
  /// another ended waits for the ranks the first one left rather than finding them taken.
  bool ending = false;
  int bridges_left = 0;  ///< bridge threads of the session still running
  std::thread down;      ///< pool -> rank
  std::thread up;        ///< rank -> pool
};

struct registry {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<rank_slot> ranks;  ///< index: rank - 1
  std::uint64_t next_session = 1;
  bool finishing = false;
};

registry& the_ranks() {
  static registry* const one = new registry;  // never destroyed: used from MPI_Finalize
  return *one;
}

void bridge_done(int rank) {
  auto& all = the_ranks();
  std::lock_guard<std::mutex> lock(all.mutex);
  rank_slot& slot = all.ranks[static_cast<std::size_t>(rank - 1)];
  if (--slot.bridges_left == 0) {
    slot.busy = false;
    all.changed.notify_all();
  }
}

/// Takes a free rank (waiting for one that is finishing a session), or throws start_error.
int take_rank() {
  auto& all = the_ranks();
  std::unique_lock<std::mutex> lock(all.mutex);
  const auto free_or_none_coming = [&] {
    bool coming = false;
    for (const auto& slot : all.ranks) {
      if (!slot.busy) return true;
      coming = coming || slot.ending || slot.bridges_left < 2;
    }
    return !coming;
  };
  all.changed.wait_for(lock, release_wait, free_or_none_coming);
  for (std::size_t i = 0; i < all.ranks.size(); ++i) {
    rank_slot& slot = all.ranks[i];
    if (slot.busy) continue;
    // The previous session's bridges have ended: joining them costs nothing.
    if (slot.down.joinable()) slot.down.join();
    if (slot.up.joinable()) slot.up.join();
    slot.busy = true;
    slot.ending = false;
    slot.bridges_left = 2;
    return static_cast<int>(i) + 1;
  }
  throw start_error("mpi: all " + std::to_string(all.ranks.size()) +
                        " worker ranks of the MPI job are serving (another pool or process "
                        "holds them until it ends); start the job with more ranks",
                    std::make_error_code(std::errc::resource_unavailable_try_again));
}

void give_back(int rank) {
  auto& all = the_ranks();
  std::lock_guard<std::mutex> lock(all.mutex);
  rank_slot& slot = all.ranks[static_cast<std::size_t>(rank - 1)];
  slot.busy = false;
  slot.bridges_left = 0;
  all.changed.notify_all();
}

/// Pool -> rank: the channel's bytes as data messages; at its end, close.
void bridge_down(int rank, std::uint64_t session, std::shared_ptr<os::channel> channel) {
  auto& mpi = transport::instance();
  try {
    std::vector<char> buffer(chunk_size);
    try {
      for (;;) {
        const std::size_t n = channel->read_some(buffer.data(), buffer.size());
        if (n == 0) break;
        mpi.send(rank, tag::data, buffer.data(), n);
      }
    } catch (const std::system_error&) {
      // The pool's end broke: as its end of stream.
    }
    mpi.send(rank, tag::close, encode_session(session));
  } catch (const std::exception& e) {
    abort_job(e.what());
  }
  bridge_done(rank);
}

/// Rank -> pool: data messages into the channel until the session's end.
void bridge_up(int rank, std::shared_ptr<os::channel> channel, std::shared_ptr<rank_child> child) {
  auto& mpi = transport::instance();
  try {
    message m;
    for (;;) {
      mpi.receive(rank, m);
      if (m.kind == tag::data) {
        try {
          channel->write_all(m.bytes.data(), m.bytes.size());
        } catch (const std::system_error&) {
          // The pool closed its end: what the rank still says is for nobody.
        }
      } else if (m.kind == tag::end) {
        {
          auto& all = the_ranks();
          std::lock_guard<std::mutex> lock(all.mutex);
          all.ranks[static_cast<std::size_t>(rank - 1)].ending = true;
        }
        body_reader reader(m.bytes.data(), m.bytes.size());
        child->ended(static_cast<int>(static_cast<std::int64_t>(reader.u64())));
        channel->close_write();  // the pool reads the end of stream after every byte
        break;
      }
    }
  } catch (const std::exception& e) {
    abort_job(e.what());
  }
  bridge_done(rank);
}

/// What a rank reads first, as launcher.cpp's send_first_frames writes it for a local child.
void send_first_frames(os::channel& channel, const launch_plan& plan, const os::child& receiver) {
  std::string head;
  std::vector<os::native_handle> attached;
  try {
    if (plan.role == child_role::process) {
      append_run_once_head(head, *plan.call, {});
      channel.write_all(head.data(), head.size());
      channel.write_all(plan.call->bytes.data(), plan.call->bytes.size());
      channel.close();  // nothing else will come
    } else {
      append_initializer(head, plan.call, receiver, attached);
      channel.write_all(head.data(), head.size());
    }
  } catch (const std::system_error&) {
    // The session ended already: its end message tells the owner.
  }
}

}  // namespace

void release_worker_ranks() noexcept {
  auto& all = the_ranks();
  auto& mpi = transport::instance();
  {
    std::unique_lock<std::mutex> lock(all.mutex);
    if (all.finishing) return;
    all.finishing = true;
    const bool idle = all.changed.wait_for(lock, release_wait, [&] {
      for (const auto& slot : all.ranks)
        if (slot.busy) return false;
      return true;
    });
    if (!idle) abort_job("worker ranks are still serving when the program ends");
    for (auto& slot : all.ranks) {
      if (slot.down.joinable()) slot.down.join();
      if (slot.up.joinable()) slot.up.join();
    }
  }
  try {
    for (int rank = 1; rank < mpi.size(); ++rank)
      mpi.send(rank, tag::finish);
  } catch (const std::exception& e) {
    abort_job(e.what());
  }
}

void start_as_rank_zero() {
  auto& mpi = transport::instance();
  mpi.start(&release_worker_ranks);
  auto& all = the_ranks();
  std::lock_guard<std::mutex> lock(all.mutex);
  all.ranks.resize(static_cast<std::size_t>(std::max(mpi.size() - 1, 0)));
}

bool available() noexcept {
  auto& mpi = transport::instance();
  if (!mpi.started() || mpi.rank() != 0) return false;
  std::lock_guard<std::mutex> lock(the_ranks().mutex);
  return !the_ranks().finishing;
}

std::string why_unavailable() {
  auto& mpi = transport::instance();
  if (mpi.started() && mpi.rank() == 0) return " (the program is ending: MPI is finalised)";
  return " (the program was not started by an MPI launcher such as mpirun -n N, or main() did "
         "not call mp::init(argc, argv) first)";
}

unsigned pool_size(unsigned asked) {
  if (!available()) {
    throw start_error("the mpi start method is not available" + why_unavailable(),
                      std::make_error_code(std::errc::function_not_supported));
  }
  const auto ranks = static_cast<unsigned>(transport::instance().size() - 1);
  if (ranks == 0 || asked > ranks) {
    throw start_error(
        "mp::pool: " +
            (asked == 0 ? std::string("every worker rank") : std::to_string(asked) + " processes") +
            " asked for, but the MPI job has " + std::to_string(ranks) + " worker rank" +
            (ranks == 1 ? "" : "s") + " (ranks 1.." + std::to_string(ranks) +
            "; start it with mpirun -n " + std::to_string(std::max(asked, 1u) + 1) + " or more)",
        std::make_error_code(std::errc::resource_unavailable_try_again));
  }
  return asked == 0 ? ranks : asked;
}

launched launch(const launch_plan& plan) {
  if (!available()) {
    throw start_error("the mpi start method is not available" + why_unavailable(),
                      std::make_error_code(std::errc::function_not_supported));
  }
  if (plan.call != nullptr && !plan.call->handles.empty()) {
    throw start_error(
        "mpi: an argument that is a handle (queue, pipe, shared object) cannot "
        "reach an MPI rank",
        std::make_error_code(std::errc::invalid_argument));
  }
  auto& mpi = transport::instance();
  auto [own_end, bridge_end] = os::make_channel_pair();
  const int rank = take_rank();
  start_request request;
  {
    std::lock_guard<std::mutex> lock(the_ranks().mutex);
    request.session = the_ranks().next_session++;
  }
  request.identity = os::image_identity();
  request.role = plan.role;
  request.parent = os::current_pid();
  long pid = 0;
  try {
    mpi.send(rank, tag::start, encode(request));
    message reply;
    mpi.receive(rank, reply);
    if (reply.kind != tag::started) {
      throw start_error("mpi: rank " + std::to_string(rank) + " refused to serve: " +
                            (reply.kind == tag::refused ? reply.bytes : "unexpected answer"),
                        std::error_code());
    }
    body_reader reader(reply.bytes.data(), reply.bytes.size());
    pid = static_cast<long>(reader.u64());
  } catch (const start_error&) {
    give_back(rank);
    throw;
  } catch (const std::exception& e) {
    abort_job(e.what());
  }
  auto child = std::make_shared<rank_child>(rank, request.session);
  auto shared_end = std::make_shared<os::channel>(std::move(bridge_end));
  {
    auto& all = the_ranks();
    std::lock_guard<std::mutex> lock(all.mutex);
    rank_slot& slot = all.ranks[static_cast<std::size_t>(rank - 1)];
    slot.down = std::thread(bridge_down, rank, request.session, shared_end);
    slot.up = std::thread(bridge_up, rank, shared_end, child);
  }
  launched started{os::child(pid, child), std::move(own_end), start_method::mpi};
  send_first_frames(started.channel, plan, started.child);
  return started;
}

}  // namespace multiproc::detail::mpi
