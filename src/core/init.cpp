// Start-up: mp::init (the diversion of a spawned child into its role), start methods, and
// facts about this process.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <multiproc/init.hpp>
#include <multiproc/this_process.hpp>

#include "../mpi/mpi.hpp"
#include "../os/spawn.hpp"
#include "../os/system.hpp"
#include "launcher.hpp"
#include "protocol/hello.hpp"

namespace multiproc {

namespace detail {
namespace {

/// A spawned child that cannot prove it was started by its parent never runs the program:
/// it says why and exits 86 (a marker alone, copied into another program's environment,
/// must not turn that program into a worker; nor may a stranger's channel).
[[noreturn]] void refuse(const std::string& why) {
  std::fprintf(stderr, "multiproc: %s; refusing to run as a child\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(protocol_failure_exit_code);
}

[[noreturn]] void run_spawned_child(const std::string& marker) {
  const auto separator = marker.find(';');
  if (separator == std::string::npos) {
    refuse("the spawn marker " + std::string(os::spawn_marker_variable) + " is malformed");
  }
  os::channel channel = os::adopt_inherited_channel(marker.substr(0, separator));
  if (!channel.is_open()) {
    refuse(std::string(os::spawn_marker_variable) +
           " is set but no channel from a parent was inherited: this program was not started by "
           "multiproc (unset the variable to run it normally)");
  }
  frame_reader reader(channel);
  frame_header header{};
  const char* body = nullptr;
  // Judged by its header first: whoever holds the channel must not make this process wait
  // for (or allocate) a body larger than any hello before the secret is checked.
  if (!reader.peek_header(header)) refuse("the parent sent no start-up hello on the channel");
  if (header.kind != frame_kind::hello || header.body_size > max_hello_body) {
    refuse("the first frame on the channel is not a start-up hello");
  }
  if (!reader.next(header, body)) refuse("the parent sent no start-up hello on the channel");
  hello accepted;
  try {
    accepted = read_hello(header, body, std::string_view(marker).substr(separator + 1));
  } catch (const hello_refused& e) {
    refuse(e.what());
  }
  os::take_parent_name(accepted.parent);
  if (accepted.role == child_role::pool_worker && !os::die_with_parent(accepted.parent)) {
    std::_Exit(0);  // the parent is gone already: nobody to serve
  }
  const std::string_view secret = std::string_view(marker).substr(separator + 1);
  std::exit(run_child(accepted.role, channel, reader, secret, accepted.parent));
}

}  // namespace
}  // namespace detail

void init(int argc, char** argv) {
  const char* marker = std::getenv(detail::os::spawn_marker_variable);
  if (marker == nullptr) {
    // A rank of an MPI job other than 0 serves rank 0 and never returns from here.
    detail::mpi::init_rank(argc, argv);
    return;
  }
  std::string value(marker);
  // A grandchild this child starts must not look spawned: the marker is for this process only.
  detail::os::unset_environment(detail::os::spawn_marker_variable);
  detail::run_spawned_child(value);
}

start_method default_start_method() noexcept {
#if defined(MULTIPROC_DEFAULT_SPAWN)
  return start_method::spawn;
#elif defined(MULTIPROC_DEFAULT_FORK)
  return start_method::fork;
#elif defined(MULTIPROC_DEFAULT_FORKSERVER)
  return start_method::forkserver;
#elif defined(MULTIPROC_DEFAULT_MPI)
  return start_method::mpi;
#else
  return MULTIPROC_HAS_FORK ? start_method::automatic : start_method::spawn;
#endif
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

}  // namespace multiproc
