// The checks a child makes before it runs a call it was sent (DESIGN: function identity):
// the invoker must be one this program registered, and the target must lie in an executable
// mapping of the named module. Exercised on the core directly, with forged call bodies.
#include <cstdint>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

#include "../src/core/protocol/call.hpp"
#include "../src/core/protocol/frame.hpp"

namespace mp = multiproc;
namespace core = multiproc::detail;

namespace {

int add_three(int x) {
  return x + 3;
}

/// An encoded call taken apart: the code references and the encoded arguments.
struct call_parts {
  std::string invoker_module;
  std::uint64_t invoker_offset = 0;
  std::string target_module;
  std::uint64_t target_offset = 0;
  std::string arguments;
};

call_parts encoded_add_three(int x) {
  const core::bound_call<int (*)(int), int> bound(&add_three, std::move(x));
  const std::string body = core::encode_call(bound.spec())->bytes;
  core::body_reader reader(body.data(), body.size());
  call_parts parts;
  parts.invoker_module = std::string(reader.string());
  parts.invoker_offset = reader.u64();
  parts.target_module = std::string(reader.string());
  parts.target_offset = reader.u64();
  parts.arguments.assign(reader.position(), reader.remaining());
  return parts;
}

std::string assemble(const call_parts& parts) {
  std::string body;
  core::append_string(body, parts.invoker_module);
  core::append_u64(body, parts.invoker_offset);
  core::append_string(body, parts.target_module);
  core::append_u64(body, parts.target_offset);
  body += parts.arguments;
  return body;
}

core::task_outcome run(const call_parts& parts) {
  const std::string body = assemble(parts);
  std::string result;
  return core::run_call_body(body.data(), body.size(), &result, 0, false, nullptr, nullptr,
                             nullptr);
}

/// Checks that the child refuses `parts` as bad arguments, saying `why`.
::testing::AssertionResult refused(const call_parts& parts, const std::string& why) {
  const auto outcome = run(parts);
  if (outcome.status != core::result_status::bad_arguments) {
    return ::testing::AssertionFailure() << "not refused: " << outcome.message;
  }
  if (outcome.message.find(why) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "refused, but not saying \"" << why << "\": " << outcome.message;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace

using core_api_checks = multiproc_test::checked;

TEST_F(core_api_checks, an_honest_call_runs) {
  const auto outcome = run(encoded_add_three(4));
  EXPECT_EQ(outcome.status, core::result_status::ok) << outcome.message;
}

TEST_F(core_api_checks, an_invoker_this_program_never_registered_is_refused) {
  // The target's own code is real, executable code of this program, but not an invoker:
  // a forged frame must not get it called with the invoker's calling convention.
  auto parts = encoded_add_three(4);
  parts.invoker_module = parts.target_module;
  parts.invoker_offset = parts.target_offset;
  EXPECT_TRUE(refused(parts, "invoker is not one this program instantiated"));
}

TEST_F(core_api_checks, a_target_outside_executable_code_is_refused) {
  auto parts = encoded_add_three(4);
  parts.target_offset = std::uint64_t{1} << 40;  // far past the end of any module
  EXPECT_TRUE(refused(parts, "not in an executable mapping"));
}

TEST_F(core_api_checks, a_module_that_is_not_loaded_is_refused) {
  auto parts = encoded_add_three(4);
  parts.target_module = "/nonexistent/libmultiproc-forged.so";
  auto outcome = run(parts);
  EXPECT_EQ(outcome.status, core::result_status::bad_arguments) << outcome.message;
  parts = encoded_add_three(4);
  parts.invoker_module = "/nonexistent/libmultiproc-forged.so";
  outcome = run(parts);
  EXPECT_EQ(outcome.status, core::result_status::bad_arguments) << outcome.message;
}

TEST_F(core_api_checks, a_truncated_body_is_refused_not_read_past_its_end) {
  const std::string body = assemble(encoded_add_three(4));
  for (std::size_t size : {std::size_t{0}, std::size_t{3}, body.size() / 2}) {
    std::string result;
    const auto outcome =
        core::run_call_body(body.data(), size, &result, 0, false, nullptr, nullptr, nullptr);
    EXPECT_EQ(outcome.status, core::result_status::bad_arguments) << "size " << size;
  }
}
