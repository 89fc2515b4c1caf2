// expect: the target is a lambda with captures or a function object with state
#include <multiproc/multiproc.hpp>

struct counter {
  int count = 0;
  int operator()(int x) { return count += x; }
};

void refuse() {
  multiproc::pool pool(1);
  pool.apply_async(counter{}, 2);
}
