// The hello (see hello.hpp).
#include "hello.hpp"

#include <multiproc/errors.hpp>

#include "../../os/code_identity.hpp"
#include "../../os/system.hpp"

namespace multiproc::detail {

namespace {
/// Compares without an early exit, so the time taken says nothing about the secret.
bool same_secret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return difference == 0;
}
}  // namespace

void append_hello(std::string& out, std::string_view secret, child_role role) {
  const std::size_t at = begin_frame(out, frame_kind::hello, 0);
  append_string(out, std::string_view(hello_magic, sizeof hello_magic));
  append_string(out, secret);
  append_string(out, os::image_identity());
  append_u64(out, static_cast<std::uint64_t>(os::current_pid()));
  out.push_back(static_cast<char>(role));
  end_frame(out, at);
}

hello read_hello(const frame_header& header, const char* body, std::string_view expected_secret) {
  if (header.kind != frame_kind::hello) {
    throw hello_refused("the parent sent no start-up hello on the inherited channel");
  }
  hello accepted;
  try {
    body_reader reader(body, header.body_size);
    if (reader.string() != std::string_view(hello_magic, sizeof hello_magic)) {
      throw hello_refused("the start-up hello has the wrong protocol marker");
    }
    if (!same_secret(reader.string(), expected_secret)) {
      throw hello_refused("the start-up secret does not match the one this child was given");
    }
    const std::string_view identity = reader.string();
    if (identity != os::image_identity()) {
      throw hello_refused("the parent runs a different program image than this one (" +
                          std::string(identity) + " vs " + os::image_identity() +
                          "); a spawned child must be the same program");
    }
    accepted.parent = static_cast<long>(reader.u64());
    const auto role = reader.u8();
    if (role > static_cast<std::uint8_t>(child_role::forkserver)) {
      throw hello_refused("the start-up hello names an unknown role");
    }
    accepted.role = static_cast<child_role>(role);
  } catch (const hello_refused&) {
    throw;
  } catch (const std::exception& e) {
    throw hello_refused(std::string("malformed start-up hello: ") + e.what());
  }
  return accepted;
}

}  // namespace multiproc::detail
