// Start-up: mp::init (the diversion of a spawned child), start methods, process facts.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <multiproc/init.hpp>
#include <multiproc/this_process.hpp>

#include "runtime.hpp"

namespace multiproc {

namespace detail {
namespace {

[[noreturn]] void refuse(const std::string& why) {
  std::fprintf(stderr, "multiproc: %s\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(protocol_failure_exit_code);
}

/// Compares without an early exit, so the time taken says nothing about the secret.
bool same_secret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return difference == 0;
}

[[noreturn]] void run_spawned_child(const std::string& marker) {
  const auto separator = marker.find(';');
  if (separator == std::string::npos) {
    refuse("the spawn marker " + std::string(os::spawn_marker_variable) +
           " is malformed; refusing to run as a child");
  }
  os::channel channel = os::adopt_inherited_channel(marker.substr(0, separator));
  if (!channel.is_open()) {
    refuse(std::string(os::spawn_marker_variable) +
           " is set but no channel from a parent was inherited: this program was not started by "
           "multiproc. Refusing to run (unset the variable to run it normally).");
  }
  frame_reader reader(channel);
  frame_header header{};
  const char* body = nullptr;
  if (!reader.next(header, body) || header.kind != frame_kind::hello) {
    refuse("the parent sent no start-up hello on the inherited channel; refusing to run");
  }
  std::string_view expected_secret(marker);
  expected_secret.remove_prefix(separator + 1);
  bool pool_worker = false;
  long parent = 0;
  try {
    body_reader hello(body, header.body_size);
    const std::string_view magic = hello.string();
    if (magic != std::string_view(hello_magic, sizeof hello_magic)) {
      refuse("the start-up hello has the wrong protocol marker; refusing to run");
    }
    if (!same_secret(hello.string(), expected_secret)) {
      refuse("the start-up secret does not match the one this child was given; refusing to run");
    }
    const std::string_view identity = hello.string();
    if (identity != os::image_identity()) {
      refuse("the parent runs a different program image than this one (" + std::string(identity) +
             " vs " + os::image_identity() + "); a spawned child must be the same program");
    }
    parent = static_cast<long>(hello.u64());
    pool_worker = hello.u8() != 0;
  } catch (const std::exception& e) {
    refuse(std::string("malformed start-up hello: ") + e.what());
  }
  int code = 0;
  if (pool_worker) {
    if (!os::die_with_parent(parent)) std::_Exit(0);
    code = run_worker(channel, reader);
  } else {
    if (!reader.next(header, body) || header.kind != frame_kind::run_once) {
      refuse("the parent closed the channel before sending the call to run");
    }
    // The call is copied out: the reader's buffer belongs to the channel we close now, so
    // that a long-running target does not hold it.
    std::string call(body, header.body_size);
    channel.close();
    code = run_process_call(call.data(), call.size());
  }
  std::exit(code);
}

}  // namespace

void ensure_may_start() {
  if (std::getenv(os::spawn_marker_variable) != nullptr) {
    throw start_error(
        "this process was started by multiproc (spawn), but main() did not call "
        "mp::init(argc, argv) before starting processes: make mp::init main's first line",
        std::error_code());
  }
}

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

void append_hello(std::string& out, std::string_view secret, bool pool_worker) {
  const std::size_t at = begin_frame(out, frame_kind::hello, 0);
  append_string(out, std::string_view(hello_magic, sizeof hello_magic));
  append_string(out, secret);
  append_string(out, os::image_identity());
  append_u64(out, static_cast<std::uint64_t>(os::current_pid()));
  out.push_back(pool_worker ? 1 : 0);
  end_frame(out, at);
}

start_method checked_method(start_method method) {
  if (!start_method_available(method)) {
    throw start_error("the fork start method is not available on this platform",
                      std::make_error_code(std::errc::function_not_supported));
  }
  return method;
}

}  // namespace detail

void init(int /*argc*/, char** /*argv*/) {
  const char* marker = std::getenv(detail::os::spawn_marker_variable);
  if (marker == nullptr) return;
  std::string value(marker);
  // A grandchild this child starts must not look spawned: the marker is for this process only.
  detail::os::unset_environment(detail::os::spawn_marker_variable);
  detail::run_spawned_child(value);
}

start_method default_start_method() noexcept {
#if MULTIPROC_HAS_FORK && !defined(MULTIPROC_DEFAULT_SPAWN)
  return start_method::fork;
#else
  return start_method::spawn;
#endif
}

bool start_method_available(start_method method) noexcept {
  return method == start_method::spawn || MULTIPROC_HAS_FORK;
}

void set_executable(const std::string& utf8_path) {
  detail::os::set_spawn_executable(utf8_path);
}

long this_process::id() noexcept {
  return detail::os::current_pid();
}
long this_process::parent_id() noexcept {
  return detail::os::parent_pid();
}
unsigned cpu_count() noexcept {
  const unsigned n = detail::os::hardware_cpu_count();
  return n == 0 ? 1 : n;
}

#if MULTIPROC_HAS_FORK
long fork() {
  detail::ensure_may_start();
  return detail::os::fork_plain();
}
#endif

}  // namespace multiproc
