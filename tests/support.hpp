// Test support: resource counting (leak checks), backends to run on, small helpers.
#pragma once

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

namespace multiproc_test {

/// What this process holds that a leak would show: open descriptors (handles on Windows),
/// zombie children, live children, shared-memory segments of this user, and (Linux) the
/// library's shared blocks: memfd descriptors this process holds and memfd mappings it has.
/// The fork server (POSIX) outlives the test that started it: it and the descriptors this
/// process holds for it are left out, and its children count as this process's own.
struct resource_counts {
  int descriptors = 0;
  int zombies = 0;
  int children = 0;
  int shared_segments = 0;
  int shared_block_descriptors = 0;
  int shared_block_mappings = 0;
  int threads = 0;
  bool operator==(const resource_counts&) const = default;
};
resource_counts count_resources();
/// How many of `full` a volume test (thousands of starts, tasks or items) runs: all of them,
/// but a fifth under a sanitizer, whose runtime makes each start and task 5-20x slower. The
/// volume itself is proved by the plain configurations; sanitized ones look for races and
/// memory errors, which a fifth of the traffic exercises just as well.
constexpr int volume(int full) {
#if defined(MULTIPROC_TEST_SANITIZED)
  return full / 5 > 0 ? full / 5 : 1;
#else
  return full;
#endif
}

std::string describe(const resource_counts& counts);

/// Waits (bounded) until the children started during a test have gone, then compares.
::testing::AssertionResult same_resources(const resource_counts& before,
                                          std::chrono::seconds settle = std::chrono::seconds(5));

/// The fixture every test uses (directly, or through method_test): after each test, nothing
/// it started may be left -- no descriptor, child, zombie, shared block or thread -- checked
/// in TearDown, as libuv checks after each of its tests.
class checked : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

 private:
  resource_counts before_;
};

/// A checked test run once per start method (the conformance suites).
class method_test : public checked, public ::testing::WithParamInterface<multiproc::start_method> {
 protected:
  multiproc::start_method method() const { return GetParam(); }
  /// A pool of `processes` workers on this test's start method.
  multiproc::pool_options options(unsigned processes = 2) const {
    return multiproc::pool_options{processes, {}, 0, GetParam()};
  }
};

/// Every start method this platform has: the conformance suite runs on each.
std::vector<multiproc::start_method> available_methods();
/// The start methods pools are tested on: every available one, but no fork in sanitized
/// builds whose runtime is not fork-safe (GCC 12's sanitizer runtimes deadlock in a child
/// forked from a threaded parent; the fork server has one thread, so it stays).
/// MULTIPROC_TEST_SANITIZER_FORK_SAFE (tests/CMakeLists.txt) marks a sanitizer runtime that
/// is: pools then run on fork too.
std::vector<multiproc::start_method> pool_methods();
/// Skips the calling test in sanitized builds whose runtime is not fork-safe, for tests that
/// fork from a threaded parent.
#if defined(MULTIPROC_TEST_SANITIZED) && !defined(MULTIPROC_TEST_SANITIZER_FORK_SAFE)
#define MULTIPROC_SKIP_FORK_POOLS_WHEN_SANITIZED() \
  GTEST_SKIP() << "forks from a threaded parent: not under GCC 12's sanitizers"
#else
#define MULTIPROC_SKIP_FORK_POOLS_WHEN_SANITIZED() (void)0
#endif
/// Skips the calling test under ThreadSanitizer (any release), for tests whose child, forked
/// from a threaded parent, starts threads of its own (a pool): TSan ends such a child at its
/// first new thread (die_after_fork=1, its default: threads in such a child are unsupported).
#if defined(__SANITIZE_THREAD__)
#define MULTIPROC_TEST_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MULTIPROC_TEST_THREAD_SANITIZER 1
#endif
#endif
#if defined(MULTIPROC_TEST_THREAD_SANITIZER)
#define MULTIPROC_SKIP_THREADS_AFTER_FORK_UNDER_TSAN() \
  GTEST_SKIP() << "its forked child starts threads: ThreadSanitizer ends such a child"
#else
#define MULTIPROC_SKIP_THREADS_AFTER_FORK_UNDER_TSAN() (void)0
#endif
std::string method_name(const ::testing::TestParamInfo<multiproc::start_method>& info);

/// This process's resident memory in bytes.
std::size_t resident_bytes();

/// Whether a process with this id still runs (zombies count as gone).
bool process_running(long pid);
/// Kills a process from outside, as a user or the OOM killer would.
void kill_from_outside(long pid);
/// Exit code of a target that called abort(), in Python's convention.
int abort_exit_code();
int sigterm_exit_code();
int sigkill_exit_code();
/// Exit code of a process killed from outside (kill_from_outside).
int outside_kill_exit_code();

/// A fresh path in the temporary directory for one test's files.
std::string temporary_path(const std::string& stem);

/// Polls `condition` until it holds or `limit` passes: a hang guard for events in other
/// processes the test cannot be told about. Returns whether it held.
template <class Condition>
bool within(std::chrono::milliseconds limit, Condition condition) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace multiproc_test
