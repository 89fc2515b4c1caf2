// A user's program, built against the installed package only.
#include <cstdio>
#include <vector>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

int square(int x) {
  return x * x;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::pool pool(2);
  const int one = pool.apply(square, 7);
  const std::vector<int> many = pool.map(square, std::vector<int>{1, 2, 3});
  std::printf("consumer: %d [%d, %d, %d]\n", one, many[0], many[1], many[2]);
  pool.close();
  pool.join();
  return 0;
}
