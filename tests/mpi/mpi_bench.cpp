// Rough figures for the mpi start method (README, Scaling out), beside
// benchmarks/mpi4py_bench.py: mpiexec --oversubscribe -n 4 multiproc_mpi_bench
// Prints one line per figure; rank 0 dispatches to the 3 worker ranks.
#include <chrono>
#include <cstdio>
#include <numeric>
#include <vector>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

namespace {
int square(int x) {
  return x * x;
}
double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::pool pool(mp::pool_options{.processes = 0, .method = mp::start_method::mpi});
  pool.apply(square, 1);  // warm
  {
    constexpr int rounds = 2000;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < rounds; ++i)
      pool.apply(square, i);
    std::printf("apply round trip: %.1f us\n", seconds_since(start) / rounds * 1e6);
  }
  {
    constexpr int count = 20000;
    const auto start = std::chrono::steady_clock::now();
    std::vector<mp::async_result<int>> results;
    results.reserve(count);
    for (int i = 0; i < count; ++i)
      results.push_back(pool.apply_async(square, i));
    long long sum = 0;
    for (auto& r : results)
      sum += r.get();
    const double took = seconds_since(start);
    std::printf("apply_async x%d: %.3f s (%.0f tasks/s) [%lld]\n", count, took, count / took, sum);
  }
  {
    std::vector<int> xs(1'000'000);
    std::iota(xs.begin(), xs.end(), 0);
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int> ys = pool.map(square, xs);
    std::printf("map 1M (default chunks): %.3f s [%d]\n", seconds_since(start), ys[1000]);
  }
  return 0;
}
