// The fork server in the portable POSIX build (see src/os/forkserver.hpp): there is none. The
// server needs what portable POSIX does not offer: a handle on a process that is not one's
// child (pidfd), to signal it without racing pid reuse and to wait for it, and the kernel's
// word on who sent a request (SO_PASSCRED). mp::start_method_available(forkserver) says false,
// and asking for it is a start_error.
#include <cstdio>
#include <cstdlib>

#include <multiproc/errors.hpp>

#include "../os/forkserver.hpp"

namespace multiproc::detail::os {

namespace {
start_error unsupported() {
  return start_error(
      "multiproc: the forkserver start method needs Linux 5.3 or later (pidfds, SO_PASSCRED); "
      "this is the portable POSIX build, which has none: use fork or spawn",
      std::make_error_code(std::errc::function_not_supported));
}
}  // namespace

bool forkserver_supported() noexcept {
  return false;
}

std::pair<channel, channel> make_forkserver_link() {
  throw unsupported();
}

owned_handle send_fork_request(channel&, std::string_view, std::uint8_t, child_kind,
                               channel& child_end) {
  child_end.close();
  throw unsupported();
}

child receive_fork_answer(channel&, owned_handle, std::chrono::milliseconds) {
  throw unsupported();
}

[[noreturn]] void serve_forks(channel&, std::string_view, long, forked_entry) {
  std::fprintf(stderr, "%s\n", unsupported().what());
  std::_Exit(1);
}

}  // namespace multiproc::detail::os
