// The test binary is also the program spawn re-executes: mp::init must come first.
#include <thread>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

int main(int argc, char** argv) {
  multiproc::init(argc, argv);
  testing::InitGoogleTest(&argc, argv);
  // ThreadSanitizer starts a background thread of its own when the program first creates a
  // thread: make that happen now, so the per-test thread counts (support.hpp) start from a
  // base that no test's first thread changes.
  std::thread([] {}).join();
  return RUN_ALL_TESTS();
}
