// expect: an argument type cannot be serialised
#include <multiproc/multiproc.hpp>

void use(int*) {}

void refuse() {
  int x = 0;
  multiproc::process p(use, &x);
}
