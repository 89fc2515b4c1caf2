// expect: an argument type cannot be serialised
#include <multiproc/multiproc.hpp>

struct opaque {
  int handle = 0;  // no serialize(): it cannot travel
};

void use(opaque) {}

void refuse() {
  multiproc::process p(use, opaque{});
}
