// expect: raw_array/array/raw_value/value hold only trivially copyable types
#include <string>

#include <multiproc/multiproc.hpp>

void refuse() {
  multiproc::value<std::string> v;
}
