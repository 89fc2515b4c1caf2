// The fork server in core (see forkserver.hpp), and mp::set_forkserver_preload.
#include "forkserver.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <multiproc/errors.hpp>
#include <multiproc/forkserver.hpp>

#include "../os/code_identity.hpp"
#include "../os/forkserver.hpp"
#include "../os/spawn.hpp"
#include "../os/system.hpp"
#include "launcher.hpp"
#include "protocol/call.hpp"
#include "protocol/codec.hpp"
#include "protocol/control.hpp"
#include "protocol/forkserver.hpp"
#include "protocol/result.hpp"

namespace multiproc {

namespace detail {

namespace {

/// How long a requester waits for the server's answer to a fork request. A fork takes
/// milliseconds even on a busy machine; a server that takes this long is stopped or starved.
std::atomic<std::chrono::milliseconds> answer_limit{std::chrono::seconds(30)};

/// This process's server and its link, shared by every thread that starts children. A start
/// holds the mutex from its request to the answer: requests are answered in order.
struct server_connection {
  std::mutex mutex;
  long owner = 0;  ///< the process that started `server`; any other pid is a forked copy
  os::child server;
  os::channel link;
  std::string secret;
  std::vector<std::shared_ptr<const encoded_call>> preload;
};

server_connection& connection() {
  // Never destroyed: a pool's supervisor may start a worker while statics are destroyed.
  static server_connection* const instance = new server_connection;
  return *instance;
}

/// In a copy of the process made by fork (the library's, mp::fork() or the program's own): the
/// server is the original's. Its descriptors in the copy are dropped without touching the
/// original's (a fork clean-up closed them already, and their numbers may be reused: the
/// owned handles know not to close those).
void forget_if_inherited_locked(server_connection& c) {
  if (c.owner == os::current_pid()) return;
  c.server = os::child();
  c.link.close();
  c.secret.clear();
  c.owner = 0;
}

/// Ends the server, which must be gone or going already, and reaps it.
void end_locked(server_connection& c, std::chrono::seconds grace) {
  c.link.close();  // the server ends when it reads the end of its link
  if (c.server.valid() && !c.server.wait(grace)) {
    c.server.kill();
    c.server.wait(std::nullopt);
  }
  c.server = os::child();
  c.secret.clear();
  c.owner = 0;
}

start_error server_start_failure(const std::string& why, std::error_code code = {}) {
  return start_error("multiproc: the fork server could not start: " + why, code);
}

/// Spawns a server, hands it its set-up (the preload and its end of the link) and waits until
/// it is ready to serve.
void start_locked(server_connection& c) {
  auto [parent_end, child_end] = os::make_channel_pair();
  auto [link, server_end] = os::make_forkserver_link();
  const std::string secret = make_secret();
  os::child server = os::spawn_child(child_end, secret, os::child_kind::process);
  try {
    std::string out;
    std::vector<os::native_handle> attached;
    append_hello(out, secret, child_role::forkserver);
    append_forkserver_setup(out, c.preload, server_end.read_handle(), server, attached);
    parent_end.write_all(out.data(), out.size(), attached);
    server_end.close();
    frame_reader reader(parent_end);
    frame_header header{};
    const char* body = nullptr;
    if (!reader.next(header, body)) {
      server.wait(std::chrono::seconds(5));
      const auto code = server.exit_code();
      throw server_start_failure("it ended during its set-up (exit code " +
                                 (code ? std::to_string(*code) : std::string("unknown")) + ")");
    }
    if (header.kind == frame_kind::initializer_failed) {
      body_reader fields(body, header.body_size);
      const task_outcome outcome = read_outcome(fields);
      throw server_start_failure(
          "a preload call failed: " + outcome.type_name +
          (outcome.message.empty() ? std::string() : ": " + outcome.message));
    }
    if (header.kind != frame_kind::ready) {
      throw server_start_failure("it answered its set-up with an unknown frame",
                                 std::make_error_code(std::errc::protocol_error));
    }
  } catch (const std::system_error& e) {
    server.kill();
    server.wait(std::nullopt);
    throw server_start_failure(e.what(), e.code());
  } catch (const std::runtime_error& e) {
    server.kill();
    server.wait(std::nullopt);
    if (dynamic_cast<const start_error*>(&e) != nullptr) throw;
    throw server_start_failure(e.what());
  }
  c.server = std::move(server);
  c.link = std::move(link);
  c.secret = secret;
  c.owner = os::current_pid();
}

/// A child of the server runs its role as a spawned child does after its hello.
int forked_by_server(std::uint8_t role, os::channel& own) {
  if (role != static_cast<std::uint8_t>(child_role::process) &&
      role != static_cast<std::uint8_t>(child_role::pool_worker)) {
    std::fprintf(stderr, "multiproc: a fork server's child was asked for an unknown role %d\n",
                 static_cast<int>(role));
    return protocol_failure_exit_code;
  }
  frame_reader reader(own);
  return run_child(static_cast<child_role>(role), own, reader, {}, 0);
}

}  // namespace

os::child fork_from_server(child_role role, os::channel& child_end) {
  const os::child_kind kind =
      role == child_role::pool_worker ? os::child_kind::pool_worker : os::child_kind::process;
  auto& c = connection();
  std::lock_guard<std::mutex> lock(c.mutex);
  forget_if_inherited_locked(c);
  if (!c.link.is_open()) {
    try {
      start_locked(c);
    } catch (...) {
      child_end.close();
      throw;
    }
  }
  try {
    os::owned_handle report =
        os::send_fork_request(c.link, c.secret, static_cast<std::uint8_t>(role), kind, child_end);
    return os::receive_fork_answer(c.link, std::move(report), answer_limit.load());
  } catch (const start_error& e) {
    // Killed from outside (or crashed): reap it now; the next start gets a new one.
    if (e.code() == std::errc::broken_pipe) end_locked(c, std::chrono::seconds(2));
    // Stopped, or too starved to answer: a requester cannot tell a server that will answer
    // late from one that never will, so it is replaced (its pool workers end with it).
    if (e.code() == std::errc::timed_out) {
      c.server.kill();
      end_locked(c, std::chrono::seconds(0));
    }
    throw;
  }
}

int run_forkserver(os::channel& channel, frame_reader& reader, std::string_view secret,
                   long requester) {
  frame_header header{};
  const char* body = nullptr;
  if (!reader.next(header, body)) return protocol_failure_exit_code;  // the requester left
  std::optional<os::channel> link;
  std::vector<std::string_view> preload;
  try {
    handle_list handles = take_handles(header, body, channel);
    preload = read_forkserver_setup(header, body);
    if (handles.size() != 1) throw std::runtime_error("no request link came with it");
    const os::native_handle end = handles[0].release();
    link.emplace(end, end);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "multiproc: the fork server's set-up is malformed: %s\n", e.what());
    return protocol_failure_exit_code;
  }
  std::string out;
  for (const std::string_view call : preload) {
    handle_list none;
    const task_outcome outcome =
        run_call_body(call.data(), call.size(), nullptr, 0, false, nullptr, nullptr, &none);
    if (outcome.status != result_status::ok) {
      append_initializer_failed(out, outcome);
      try {
        channel.write_all(out.data(), out.size());
      } catch (const std::system_error&) {
      }
      return 1;
    }
  }
  append_ready(out);
  try {
    channel.write_all(out.data(), out.size());
  } catch (const std::system_error&) {
    return 0;  // the requester is gone already: nobody to serve
  }
  channel.close();
  prepare_thread_codec();  // built once here, inherited ready by every child
  // The module list and the image's identity, looked up once here rather than by every child
  // when it resolves its call (a dl_iterate_phdr walk and 8 page faults a child).
  (void)os::resolve_code("", 0);
  (void)os::image_identity();
  os::serve_forks(*link, secret, requester, &forked_by_server);
}

void set_forkserver_answer_limit(std::chrono::milliseconds limit) noexcept {
  answer_limit.store(limit);
}

long forkserver_pid() noexcept {
  auto& c = connection();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.owner == os::current_pid() ? c.server.pid() : 0;
}

int forkserver_descriptors() noexcept {
  auto& c = connection();
  std::lock_guard<std::mutex> lock(c.mutex);
  if (c.owner != os::current_pid()) return 0;
  return (c.link.is_open() ? 1 : 0) + (c.server.handle() != os::invalid_handle ? 1 : 0);
}

void stop_forkserver() noexcept {
  auto& c = connection();
  std::lock_guard<std::mutex> lock(c.mutex);
  forget_if_inherited_locked(c);
  end_locked(c, std::chrono::seconds(10));
}

int send_forged_fork_request(std::string_view secret, bool await_answer) {
  auto& c = connection();
  std::lock_guard<std::mutex> lock(c.mutex);
  if (!c.link.is_open()) {
    throw start_error("multiproc: no fork server to send a request to",
                      std::make_error_code(std::errc::not_connected));
  }
  auto [mine, theirs] = os::make_channel_pair();
  os::owned_handle report = os::send_fork_request(
      c.link, secret.empty() ? std::string_view(c.secret) : secret,
      static_cast<std::uint8_t>(child_role::process), os::child_kind::process, theirs);
  if (!await_answer) return 0;
  try {
    os::child forked = os::receive_fork_answer(c.link, std::move(report), answer_limit.load());
    forked.kill();
    forked.wait(std::nullopt);
    return 0;
  } catch (const start_error& e) {
    return e.code().value();
  }
}

}  // namespace detail

void set_forkserver_preload(std::vector<call> calls) {
  std::vector<std::shared_ptr<const detail::encoded_call>> encoded;
  for (const call& each : calls) {
    if (!each) throw std::invalid_argument("mp::set_forkserver_preload: an empty mp::call");
    if (!each.encoded()->handles.empty()) {
      throw std::invalid_argument(
          "mp::set_forkserver_preload: a preload call cannot carry a queue, pipe or shared "
          "object (the server keeps nothing of it for its children)");
    }
    detail::check_frame_size(each.encoded()->bytes.size());
    encoded.push_back(each.encoded());
  }
  auto& c = detail::connection();
  std::lock_guard<std::mutex> lock(c.mutex);
  detail::forget_if_inherited_locked(c);
  if (c.link.is_open()) {
    throw state_error(
        "mp::set_forkserver_preload: this process's fork server is already running; set the "
        "preload before the first start that uses it");
  }
  c.preload = std::move(encoded);
}

}  // namespace multiproc
