// The test binary is also the program spawn re-executes: mp::init must come first.
#include <thread>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

#if defined(__SANITIZE_THREAD__)  // GCC
#define MULTIPROC_TEST_TSAN 1
#elif defined(__has_feature)  // clang
#if __has_feature(thread_sanitizer)
#define MULTIPROC_TEST_TSAN 1
#endif
#endif
#ifdef MULTIPROC_TEST_TSAN
// libstdc++ is not instrumented, so ThreadSanitizer does not see the atomic reference count of
// an exception_ptr: a pool error made by a supervisor thread, rethrown and read by the caller,
// then freed by the supervisor when it drops the last reference, is reported as a race though
// the count orders it. Interceptors called from uninstrumented code (here: free from
// __cxa_free_exception) are what this option ignores; our own code stays fully checked.
extern "C" const char* __tsan_default_options();
extern "C" const char* __tsan_default_options() {
  return "ignore_noninstrumented_modules=1";
}
#endif

int main(int argc, char** argv) {
  multiproc::init(argc, argv);
  testing::InitGoogleTest(&argc, argv);
  // ThreadSanitizer starts a background thread of its own when the program first creates a
  // thread: make that happen now, so the per-test thread counts (support.hpp) start from a
  // base that no test's first thread changes.
  std::thread([] {}).join();
  return RUN_ALL_TESTS();
}
