// expect: the target takes a non-const reference
#include <vector>

#include <multiproc/multiproc.hpp>

void fill(std::vector<int>& out) {
  out.push_back(1);
}

void refuse() {
  std::vector<int> v;
  multiproc::process p(fill, v);
}
