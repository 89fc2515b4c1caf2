// The MPI test program: mp::init first (ranks 1..N-1 serve there and never return).
#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

int main(int argc, char** argv) {
  multiproc::init(argc, argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
