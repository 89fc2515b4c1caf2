// expect: the target's result type cannot be serialised
#include <multiproc/multiproc.hpp>

struct opaque {
  int handle = 0;
};

opaque make(int) {
  return {};
}

void refuse() {
  multiproc::pool pool(1);
  pool.apply(make, 1);
}
