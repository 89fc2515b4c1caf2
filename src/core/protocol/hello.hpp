// The hello: the first frame a spawned child reads, with which the parent proves it is the
// one that started it (the per-spawn secret from the child's environment) and that both run
// the same program image. A forked child needs none: it is the parent's own copy.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "frame.hpp"

namespace multiproc::detail {

/// The bytes a hello starts with.
inline constexpr char hello_magic[8] = {'M', 'P', 'R', 'O', 'C', '0', '0', '1'};
/// Exit code of a spawned child whose start-up proof failed (it never runs the program).
inline constexpr int protocol_failure_exit_code = 86;
/// The largest body a hello may claim (magic, secret, identity, pid, role: a few hundred
/// bytes, the identity's path at most 32 Ki UTF-16 units on Windows); a first frame claiming
/// more is refused before its body is read.
inline constexpr std::uint32_t max_hello_body = 256 * 1024;

/// What a child is started to do.
enum class child_role : std::uint8_t {
  process = 0,      ///< an mp::process: run one call (a run_once frame), then exit
  pool_worker = 1,  ///< a pool worker: run tasks until stopped
  forkserver = 2,   ///< a fork server: run the preload calls, then fork children on request
};

/// Appends the hello a spawned child expects: magic, `secret`, this image's identity, this
/// process's id, `role`.
void append_hello(std::string& out, std::string_view secret, child_role role);

/// A hello that was checked and accepted.
struct hello {
  long parent = 0;
  child_role role = child_role::process;
};
/// Why a hello was refused; what() is the message for the child's stderr.
class hello_refused : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
/// Checks a hello frame against the secret from this child's marker (compared in constant
/// time) and this image's identity. Throws hello_refused saying what did not match.
hello read_hello(const frame_header& header, const char* body, std::string_view expected_secret);

}  // namespace multiproc::detail
