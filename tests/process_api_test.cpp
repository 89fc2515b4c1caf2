// mp::process targets whose result a pool could not take: a process discards its target's
// result, so any result type compiles and runs.
#include <cstdlib>
#include <memory>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

namespace mp = multiproc;

namespace {

struct not_serialisable {
  int value = 0;
};

not_serialisable make_unserialisable(int code) {
  if (code != 0) std::exit(code);
  return not_serialisable{code};
}

const int* return_a_pointer(int code) {
  static const int answer = 42;
  std::exit(code);
  return &answer;
}

std::unique_ptr<int> return_move_only(int code) {
  std::exit(code);
  return std::make_unique<int>(code);
}

}  // namespace

using process_api = multiproc_test::checked;

TEST_F(process_api, targets_with_results_a_pool_refuses_still_run) {
  static_assert(!mp::is_transferable_v<not_serialisable>);
  static_assert(!mp::is_transferable_v<const int*>);
  for (const auto method : multiproc_test::available_methods()) {
    const auto exit_code_of = [method](auto target, int code) {
      mp::process p(method, target, code);
      p.start();
      p.join();
      return p.exitcode();
    };
    EXPECT_EQ(exit_code_of(make_unserialisable, 0), 0);
    EXPECT_EQ(exit_code_of(make_unserialisable, 5), 5);
    EXPECT_EQ(exit_code_of(return_a_pointer, 6), 6);
    EXPECT_EQ(exit_code_of(return_move_only, 7), 7);
  }
}
