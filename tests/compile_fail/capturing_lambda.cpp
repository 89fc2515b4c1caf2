// expect: the target is a lambda with captures or a function object with state
#include <multiproc/multiproc.hpp>

void refuse() {
  int captured = 1;
  multiproc::process p([captured](int x) { (void)(x + captured); }, 2);
}
