// The test binary is also the program spawn re-executes: mp::init must come first.
#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

int main(int argc, char** argv) {
  multiproc::init(argc, argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
