// A worker given a huge argument holds it about once: the shared block it arrived in is given
// back as it is decoded, so the mapped and decoded copies never coexist in full (Linux).
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

namespace mp = multiproc;

#if defined(__linux__) && !defined(MULTIPROC_TEST_SANITIZED)
namespace {

constexpr std::size_t payload_size = std::size_t{128} << 20;

long status_kib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

/// In the worker: resets its peak to what it holds now (a forked worker inherits its
/// parent's peak) and returns that.
long reset_peak_kib(int) {
  std::ofstream("/proc/self/clear_refs") << "5";
  return status_kib("VmHWM");
}

/// In the worker, with the argument decoded and alive: the peak since the reset.
long peak_kib_holding(std::vector<char> payload) {
  return payload.size() == payload_size && payload[payload_size - 1] == 7 ? status_kib("VmHWM")
                                                                          : -1;
}

}  // namespace

TEST(posix_worker_memory, huge_argument_is_held_about_once_in_the_worker) {
  for (const auto method : multiproc_test::pool_methods()) {
    mp::pool pool(mp::pool_options{1, {}, 0, method});
    const long base = pool.apply(reset_peak_kib, 0);
    ASSERT_GT(base, 0);
    const long peak = pool.apply(peak_kib_holding, std::vector<char>(payload_size, 7));
    ASSERT_GT(peak, 0) << "the argument arrived damaged";
    const double copies = static_cast<double>(peak - base) * 1024.0 / payload_size;
    // One copy is the decoded argument itself; mapped and decoded in full at once would be
    // two.
    EXPECT_GT(copies, 0.9);
    EXPECT_LT(copies, 1.5) << "the worker held the argument's shared block next to its copy";
  }
}
#else
TEST(posix_worker_memory, huge_argument_is_held_about_once_in_the_worker) {
  GTEST_SKIP() << "Linux without sanitizers only: shared blocks are Linux-only on POSIX, and a "
                  "sanitizer's shadow memory changes what peak memory means";
}
#endif
