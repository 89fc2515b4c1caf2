// Python's classic shared-state programs: ten processes add one to a shared Value a thousand
// times each under a Lock (10000 at the end, every time); then the documentation's Value and
// Array example (a child writes pi into a Value and negates every element of an Array).
#include <cstdio>
#include <mutex>
#include <vector>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

void add_one(mp::value<int> v, mp::mutex lock) {
  for (int i = 0; i < 1000; ++i) {
    std::lock_guard<mp::mutex> guard(lock);  // with lock:
    *v.get() += 1;                           //     v.value += 1
  }
}

void f(mp::value<double> n, mp::array<int> a) {
  n.store(3.1415927);
  for (std::size_t i = 0; i < a.size(); ++i)
    a[i] = -a[i];
}

int main(int argc, char** argv) {
  mp::init(argc, argv);

  mp::mutex lock;
  mp::value<int> v(0);
  std::vector<mp::process> procs;
  for (int i = 0; i < 10; ++i)
    procs.emplace_back(add_one, v, lock);
  for (auto& p : procs)
    p.start();
  for (auto& p : procs)
    p.join();
  std::printf("%d\n", v.load());

  mp::value<double> num(0.0);
  mp::array<int> arr(std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  mp::process p(f, num, arr);
  p.start();
  p.join();
  std::printf("%.7f\n[", num.load());
  for (std::size_t i = 0; i < arr.size(); ++i)
    std::printf("%s%d", i == 0 ? "" : ", ", arr[i]);
  std::printf("]\n");
}
