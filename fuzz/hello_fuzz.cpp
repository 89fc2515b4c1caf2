// Fuzz target: the hello (src/core/protocol/hello.hpp), the start-up proof a spawned child
// checks before it does anything else. The path is the child's own (core/init.cpp): the first
// frame read from a real channel, then read_hello against the secret from the marker. The
// input is [piece pattern][stream]. Oracles: read_hello throws nothing but hello_refused; it
// accepts only a hello frame whose body holds the magic, the exact secret, this image's
// identity, a pid and a known role (checked by an independent parser); and (through
// scripts/fuzz.sh's -malloc_limit_mb) nothing before the secret is checked makes the child
// allocate what was never sent.
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "../src/core/protocol/frame.hpp"
#include "../src/core/protocol/hello.hpp"
#include "../src/os/code_identity.hpp"
#include "support.hpp"

namespace core = multiproc::detail;

namespace {

/// The secret this "child" was given in its marker (the launcher's are 32 hex digits).
constexpr std::string_view secret = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

std::vector<std::string> seeds() {
  std::vector<std::string> out;
  std::string good;
  core::append_hello(good, secret, core::child_role::pool_worker);
  std::string process;
  core::append_hello(process, secret, core::child_role::process);
  std::string wrong;
  core::append_hello(wrong, "0f1e2d3c4b5a69788796a5b4c3d2e1f1", core::child_role::pool_worker);
  for (const std::string* hello : {&good, &process, &wrong}) {
    out.push_back(std::string(1, '\0') + *hello);
    out.push_back(std::string(1, '\x07') + *hello);
  }
  return out;
}

/// What read_hello may accept, decided without it.
bool acceptable(const core::frame_header& header, std::string_view body, long& parent,
                core::child_role& role) {
  if (header.kind != core::frame_kind::hello) return false;
  multiproc_fuzz::plain_reader reader(body);
  std::string_view magic, given_secret, identity;
  std::uint64_t pid = 0;
  std::uint8_t role_byte = 0;
  if (!reader.string(magic) || magic != std::string_view(core::hello_magic, 8)) return false;
  if (!reader.string(given_secret) || given_secret != secret) return false;
  if (!reader.string(identity) || identity != multiproc::detail::os::image_identity()) {
    return false;
  }
  if (!reader.u64(pid) || !reader.u8(role_byte) ||
      role_byte > static_cast<std::uint8_t>(core::child_role::forkserver)) {
    return false;
  }
  parent = static_cast<long>(pid);
  role = static_cast<core::child_role>(role_byte);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  multiproc_fuzz::write_seeds_if_asked(seeds());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  multiproc_fuzz::fed_channel fed(stream, data[0]);
  core::frame_reader reader(fed.reader());
  core::frame_header header{};
  const char* body = nullptr;
  try {
    if (!reader.next(header, body)) return 0;  // init.cpp refuses: no hello
  } catch (const std::bad_alloc&) {
    // Known (hello_frame_is_capped_before_the_secret_is_checked): the claimed length of the
    // first frame is allocated before anything is checked. Skipped only under
    // skip_known("alloc").
    if (!multiproc_fuzz::skip_known("alloc")) throw;
    return 0;
  }
  long parent = 0;
  core::child_role role = core::child_role::process;
  const bool should_accept =
      acceptable(header, std::string_view(body, header.body_size), parent, role);
  try {
    const core::hello accepted = core::read_hello(header, body, secret);
    MULTIPROC_FUZZ_CHECK(should_accept);
    MULTIPROC_FUZZ_CHECK(accepted.parent == parent);
    MULTIPROC_FUZZ_CHECK(accepted.role == role);
  } catch (const core::hello_refused&) {
    MULTIPROC_FUZZ_CHECK(!should_accept);
  }
  return 0;
}
