// Starting children (see launcher.hpp), the start methods' availability and the automatic
// choice, and mp::fork(): everything in core that depends on whether fork exists is in this
// file.
#include "launcher.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include <multiproc/errors.hpp>
#include <multiproc/this_process.hpp>

#include "../mpi/mpi.hpp"
#include "../os/fork.hpp"
#include "../os/forkserver.hpp"
#include "../os/spawn.hpp"
#include "../os/system.hpp"
#include "protocol/call.hpp"
#include "protocol/codec.hpp"
#include "protocol/task.hpp"
#include "worker.hpp"
#if MULTIPROC_HAS_FORK
#include "forkserver.hpp"
#endif

namespace multiproc::detail {

namespace {

os::child_kind kind_of(child_role role) {
  return role == child_role::pool_worker ? os::child_kind::pool_worker : os::child_kind::process;
}

/// Threads marked own_thread that are running now.
std::atomic<unsigned> own_threads{0};

/// Writes what a child reads first. A child already gone (it refused the hello, or was
/// killed) is not an error here: its exit code, or its channel's end, tells the owner.
void send_ignoring_a_gone_child(os::channel& channel, std::string_view head, std::string_view body,
                                std::string_view tail,
                                std::span<const os::native_handle> attached) {
  try {
    channel.write_all(head.data(), head.size(), attached);
    if (!body.empty()) channel.write_all(body.data(), body.size());
    if (!tail.empty()) channel.write_all(tail.data(), tail.size());
  } catch (const std::system_error&) {
  }
}

/// Sends a started child what it reads first, after `head` (a spawned child's hello, or
/// nothing): an mp::process's call (then the channel is closed: nothing else will come), or
/// a pool worker's initializer frame.
void send_first_frames(launched& started, const launch_plan& plan, std::string head) {
  try {
    std::vector<os::native_handle> attached;
    if (plan.role == child_role::process) {
      // The call (up to 2 GiB) is written from where it is rather than copied after the head.
      const std::string trailer = handle_trailer(plan.call->handles, started.child, attached);
      append_run_once_head(head, *plan.call, trailer);
      send_ignoring_a_gone_child(started.channel, head, plan.call->bytes, trailer, attached);
      started.channel.close();
    } else {
      append_initializer(head, plan.call, started.child, attached);
      send_ignoring_a_gone_child(started.channel, head, {}, {}, attached);
    }
  } catch (...) {
    // A child that never gets its call would wait for it forever: end it, then report.
    started.child.kill();
    started.child.wait(std::nullopt);
    throw;
  }
}

launched spawn(const launch_plan& plan) {
  auto [parent_end, child_end] = os::make_channel_pair();
  const std::string secret = make_secret();
  launched started{os::spawn_child(child_end, secret, kind_of(plan.role)), std::move(parent_end),
                   start_method::spawn};
  std::string head;
  append_hello(head, secret, plan.role);
  send_first_frames(started, plan, std::move(head));
  return started;
}

}  // namespace

std::string make_secret() {
  unsigned char bytes[16];
  os::random_bytes(bytes, sizeof bytes);
  static const char digits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char b : bytes) {
    hex.push_back(digits[b >> 4]);
    hex.push_back(digits[b & 15]);
  }
  return hex;
}

own_thread::own_thread() noexcept {
  own_threads.fetch_add(1, std::memory_order_release);
}
own_thread::~own_thread() {
  own_threads.fetch_sub(1, std::memory_order_release);
}

int run_child(child_role role, os::channel& channel, frame_reader& reader,
              [[maybe_unused]] std::string_view secret, [[maybe_unused]] long parent) {
  if (role == child_role::pool_worker) return run_worker(channel, reader);
  if (role == child_role::forkserver) {
#if MULTIPROC_HAS_FORK
    return run_forkserver(channel, reader, secret, parent);
#else
    std::fprintf(stderr, "multiproc: this platform has no fork server\n");
    return protocol_failure_exit_code;
#endif
  }
  frame_header header{};
  const char* body = nullptr;
  if (!reader.next(header, body) || header.kind != frame_kind::run_once) {
    // As any failed start-up proof: no atexit handler or destructor of the program runs.
    std::fprintf(stderr,
                 "multiproc: the parent closed the channel before sending the call to run\n");
    std::fflush(stderr);
    std::_Exit(protocol_failure_exit_code);
  }
  handle_list handles;
  try {
    handles = take_handles(header, body, channel);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "multiproc: the call's handles did not arrive: %s\n", e.what());
    return protocol_failure_exit_code;
  }
  // Copied out: the reader's buffer belongs to the channel closed now, so that a long-running
  // target does not hold it.
  const std::string call(body, header.body_size);
  channel.close();
  return run_process_call(call.data(), call.size(), handles);
}

void ensure_may_start() {
  if (std::getenv(os::spawn_marker_variable) != nullptr) {
    throw start_error(
        "this process was started by multiproc (spawn), but main() did not call "
        "mp::init(argc, argv) before starting processes: make mp::init main's first line",
        std::error_code());
  }
}

start_method checked_method(start_method method) {
  if (!start_method_available(method)) {
    std::string why = std::string("the ") + method_name(method) +
                      " start method is not available on this platform";
    if (method == start_method::forkserver) {
      why += MULTIPROC_HAS_FORK
                 ? " (it needs Linux 5.3 or later, and is not in the portable POSIX build)"
                 : " (POSIX only)";
    } else if (method == start_method::mpi) {
      why += mpi::why_unavailable();
    }
    throw start_error(why, std::make_error_code(std::errc::function_not_supported));
  }
  return method;
}

const char* method_name(start_method method) noexcept {
  switch (method) {
    case start_method::fork:
      return "fork";
    case start_method::spawn:
      return "spawn";
    case start_method::forkserver:
      return "forkserver";
    case start_method::automatic:
      return "automatic";
    case start_method::mpi:
      return "mpi";
  }
  return "unknown";
}

}  // namespace multiproc::detail

namespace multiproc {

#if MULTIPROC_HAS_FORK

long fork() {
  detail::ensure_may_start();
  return detail::os::fork_plain();
}

namespace detail {
namespace {
/// True while the program runs no thread but its main thread and the library's own. A thread
/// counts as the library's from its first line to its last, inside the span the kernel counts
/// it: a thread starting or ending is counted as the program's, never the other way round.
bool only_own_threads() noexcept {
  const unsigned own = own_threads.load(std::memory_order_acquire);
  const unsigned all = os::thread_count();
  return all != 0 && all <= 1 + own;
}

/// In a forked mp::process: the call and its handles, which the fork kept open under the
/// same numbers.
int forked_process(void* context) {
  const auto& call = *static_cast<const encoded_call*>(context);
  handle_list handles;
  for (const auto& inherited : call.handles)
    handles.push_back(os::adopt_inherited(os::inherit_token(inherited.get())));
  return run_process_call(call.bytes.data(), call.bytes.size(), handles);
}

int forked_worker(void* channel) {
  auto& own = *static_cast<os::channel*>(channel);
  frame_reader reader(own);
  return run_worker(own, reader);
}

launched fork_child(const launch_plan& plan) {
  // Built here once per thread, the decoder the child uses is inherited ready: built in each
  // child, its stream and locale cost allocations and page faults at every start.
  prepare_thread_codec();
  if (plan.role == child_role::process) {
    // Everything the child needs is in the memory it inherits: no channel at all.
    std::vector<os::native_handle> keep;
    for (const auto& handle : plan.call->handles)
      keep.push_back(handle.get());
    return {os::fork_child(&forked_process, const_cast<encoded_call*>(plan.call), keep,
                           os::child_kind::process),
            {},
            start_method::fork};
  }
  auto [parent_end, child_end] = os::make_channel_pair();
  const os::native_handle own_end[] = {child_end.read_handle()};
  launched started{os::fork_child(&forked_worker, &child_end, own_end, os::child_kind::pool_worker),
                   std::move(parent_end), start_method::fork};
  child_end.close();
  try {
    std::string head;
    std::vector<os::native_handle> attached;
    append_initializer(head, plan.call, started.child, attached);
    send_ignoring_a_gone_child(started.channel, head, {}, {}, attached);
  } catch (...) {
    started.child.kill();
    started.child.wait(std::nullopt);
    throw;
  }
  return started;
}

/// First frames up to this size are written before the child exists (see forkserver_child):
/// far below what a Unix stream socket buffers, so the write never waits for a reader.
constexpr std::size_t early_frames_limit = 32 * 1024;

/// The server forks the child and hands it its end of the channel; the call's frame goes
/// through the channel as for spawn, without a hello (the channel never left the two
/// processes and the server: nobody else could have written to it). A small call is written
/// into the channel before the request, so the child finds it the instant it is forked,
/// rather than after this process has read the server's answer: one wake-up less between
/// start() and the call running. A larger one follows the answer.
launched forkserver_child(const launch_plan& plan) {
  const std::size_t call_size = plan.call != nullptr ? plan.call->bytes.size() : 0;
  const bool early = call_size <= early_frames_limit;
  for (int attempt = 0;; ++attempt) {
    auto [parent_end, child_end] = os::make_channel_pair();
    if (early) {
      // On POSIX a descriptor travels by SCM_RIGHTS: no receiver is needed to pass it.
      const os::child nobody;
      std::string head;
      std::vector<os::native_handle> attached;
      if (plan.role == child_role::process) {
        const std::string trailer = handle_trailer(plan.call->handles, nobody, attached);
        append_run_once_head(head, *plan.call, trailer);
        head += plan.call->bytes;
        head += trailer;
      } else {
        append_initializer(head, plan.call, nobody, attached);
      }
      try {
        parent_end.write_all(head.data(), head.size(), attached);
      } catch (const std::system_error& e) {
        throw start_error(
            std::string("multiproc: could not write a child's first frame: ") + e.what(), e.code());
      }
    }
    os::child forked;
    try {
      forked = fork_from_server(plan.role, child_end);
    } catch (const start_error& e) {
      // The server was found dead (and reaped): once, a new one serves this very start.
      if (e.code() == std::errc::broken_pipe && attempt == 0) continue;
      throw;
    }
    launched started{std::move(forked), std::move(parent_end), start_method::forkserver};
    if (!early) {
      send_first_frames(started, plan, {});
    } else if (plan.role == child_role::process) {
      started.channel.close();  // nothing else will come
    }
    return started;
  }
}
}  // namespace

launched launch(const launch_plan& plan) {
  switch (resolve_start_method(plan.method)) {
    case start_method::fork:
      return fork_child(plan);
    case start_method::forkserver:
      os::flush_parent_output();  // as a fork does (os/fork.cpp), and Python on every method
      return forkserver_child(plan);
    case start_method::mpi:
      return mpi::launch(plan);
    default:
      os::flush_parent_output();
      return spawn(plan);
  }
}
}  // namespace detail

bool start_method_available(start_method method) noexcept {
  if (method == start_method::mpi) return detail::mpi::available();
  return method != start_method::forkserver || detail::os::forkserver_supported();
}

start_method resolve_start_method(start_method method) noexcept {
  if (method != start_method::automatic) return method;
  if (detail::only_own_threads()) return start_method::fork;
  return detail::os::forkserver_supported() ? start_method::forkserver : start_method::spawn;
}

#else

namespace detail {
launched launch(const launch_plan& plan) {
  os::flush_parent_output();  // as Python does on every method
  return spawn(plan);
}
}  // namespace detail

bool start_method_available(start_method method) noexcept {
  return method == start_method::spawn || method == start_method::automatic;
}

start_method resolve_start_method(start_method method) noexcept {
  return method == start_method::automatic ? start_method::spawn : method;
}

#endif

}  // namespace multiproc
