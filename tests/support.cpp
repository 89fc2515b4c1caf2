// Portable test support.
#include "support.hpp"

#include <sstream>

namespace multiproc_test {

std::string describe(const resource_counts& c) {
  std::ostringstream out;
  out << c.descriptors << " descriptors, " << c.zombies << " zombies, " << c.children
      << " live children, " << c.shared_segments << " shared-memory segments, "
      << c.shared_block_descriptors << " shared-block descriptors, " << c.shared_block_mappings
      << " shared-block mappings, " << c.threads << " threads";
  return out.str();
}

namespace {
/// Whether `after` holds nothing `before` did not. Shared-memory segments are counted for the
/// whole user (/dev/shm), not for this process: another test process running beside this one
/// (ctest -j) may hold a name for an instant (the portable build names each block between its
/// shm_open and its shm_unlink). One seen in `before` and gone in `after` is that process's,
/// not a leak of this test; one this test left would be there in every later look.
bool nothing_left(const resource_counts& before, const resource_counts& after) {
  resource_counts same_segments = after;
  same_segments.shared_segments = before.shared_segments;
  return same_segments == before && after.shared_segments <= before.shared_segments;
}
}  // namespace

::testing::AssertionResult same_resources(const resource_counts& before,
                                          std::chrono::seconds settle) {
  resource_counts after;
  const bool settled = within(settle, [&] {
    after = count_resources();
    return nothing_left(before, after);
  });
  if (settled) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "before: " << describe(before) << "; after: " << describe(after);
}

void checked::SetUp() {
  before_ = count_resources();
}
void checked::TearDown() {
  EXPECT_TRUE(same_resources(before_)) << "the test left resources behind";
}

std::vector<multiproc::start_method> available_methods() {
  std::vector<multiproc::start_method> methods;
  for (auto m : {multiproc::start_method::fork, multiproc::start_method::spawn,
                 multiproc::start_method::forkserver}) {
    if (multiproc::start_method_available(m)) methods.push_back(m);
  }
  return methods;
}

std::vector<multiproc::start_method> pool_methods() {
#if defined(MULTIPROC_TEST_SANITIZED) && !defined(MULTIPROC_TEST_SANITIZER_FORK_SAFE)
  // The fork server forks from a process with one thread: the sanitizers' runtimes cope.
  std::vector<multiproc::start_method> methods{multiproc::start_method::spawn};
  if (multiproc::start_method_available(multiproc::start_method::forkserver)) {
    methods.push_back(multiproc::start_method::forkserver);
  }
  return methods;
#else
  return available_methods();
#endif
}

std::string method_name(const ::testing::TestParamInfo<multiproc::start_method>& info) {
  switch (info.param) {
    case multiproc::start_method::fork:
      return "fork";
    case multiproc::start_method::spawn:
      return "spawn";
    case multiproc::start_method::forkserver:
      return "forkserver";
    case multiproc::start_method::automatic:
      return "automatic";
    case multiproc::start_method::mpi:
      return "mpi";
  }
  return "unknown";
}

}  // namespace multiproc_test
