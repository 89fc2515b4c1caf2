// expect: A generic lambda
#include <multiproc/multiproc.hpp>

void refuse() {
  multiproc::process p([](auto x) { (void)x; }, 1);
}
