// How costs grow with work, and how steady throughput is (issue 15). Not Google Benchmark:
// each table is one program's experience, as a user's program would see it, printed as
// Markdown on stdout (benchmarks/run.py --scaling puts it in benchmarks/RESULTS-scaling.md).
//
//   batches   8 consecutive batches of 20 000 apply_async + get on one pool(2): tasks/s per
//             batch, and the spread (max-min)/median across them
//   pools     apply_async x20 000 and map(1 M, default chunksize) on pool(1), (2), (4), (8)
//   memory    process start+join while this process holds 0, 100 MB and 1 GB of touched
//             memory, on fork, spawn and forkserver (median of 30 starts each)
//
// Usage: multiproc_scaling [batches|pools|memory]... (none: all three)
#include <multiproc/multiproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace mp = multiproc;
using steady = std::chrono::steady_clock;

namespace {

int square(int x) {
  return x * x;
}
void noop() {}

double seconds_since(steady::time_point start) {
  return std::chrono::duration<double>(steady::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 != 0 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

/// Seconds for `calls` apply_async + get on `pool`.
double apply_async_batch(mp::pool& pool, int calls) {
  std::vector<mp::async_result<int>> results;
  results.reserve(static_cast<std::size_t>(calls));
  const auto start = steady::now();
  for (int i = 0; i < calls; ++i)
    results.push_back(pool.apply_async(square, i));
  long long sum = 0;
  for (auto& r : results)
    sum += r.get();
  const double elapsed = seconds_since(start);
  if (sum < 0) std::printf("impossible\n");
  return elapsed;
}

void warm_up(mp::pool& pool) {
  for (int i = 0; i < 200; ++i)
    (void)pool.apply(square, i);
}

void batches() {
  constexpr int calls = 20000;
  constexpr int count = 8;
  mp::pool pool(2);
  warm_up(pool);
  std::vector<double> rates;
  std::printf("### 8 consecutive batches of %d apply_async + get, one pool(2)\n\n", calls);
  std::printf("| batch | seconds | tasks/s |\n|---|---|---|\n");
  for (int b = 0; b < count; ++b) {
    const double s = apply_async_batch(pool, calls);
    rates.push_back(calls / s);
    std::printf("| %d | %.4f | %.0f |\n", b + 1, s, calls / s);
  }
  const double lo = *std::min_element(rates.begin(), rates.end());
  const double hi = *std::max_element(rates.begin(), rates.end());
  const double mid = median(rates);
  std::printf(
      "\nbatches: min %.0f, median %.0f, max %.0f tasks/s; spread (max-min)/median %.0f%%\n\n", lo,
      mid, hi, (hi - lo) / mid * 100);
  std::fflush(stdout);
}

void pools() {
  std::printf("### Throughput by pool size (this machine: %u CPUs)\n\n", mp::cpu_count());
  std::printf(
      "| workers | apply_async x20 000 + get, tasks/s | map 1 M (default chunksize), items/s |\n");
  std::printf("|---|---|---|\n");
  const std::vector<int> items(1000000, 7);
  for (unsigned workers : {1u, 2u, 4u, 8u}) {
    mp::pool pool(workers);
    warm_up(pool);
    std::vector<double> apply_rates;
    std::vector<double> map_rates;
    for (int rep = 0; rep < 3; ++rep) {
      apply_rates.push_back(20000 / apply_async_batch(pool, 20000));
      const auto start = steady::now();
      const std::vector<int> out = pool.map(square, items);
      map_rates.push_back(static_cast<double>(out.size()) / seconds_since(start));
    }
    std::printf("| %u | %.0f | %.0f |\n", workers, median(apply_rates), median(map_rates));
    std::fflush(stdout);
  }
  std::printf("\n(medians of 3 runs each)\n\n");
}

const char* name_of(mp::start_method method) {
  switch (method) {
    case mp::start_method::fork:
      return "fork";
    case mp::start_method::spawn:
      return "spawn";
    case mp::start_method::forkserver:
      return "forkserver";
    default:
      return "other";
  }
}

/// Median seconds of one start+join on `method`.
double start_join(mp::start_method method) {
  std::vector<double> samples;
  for (int i = 0; i < 30; ++i) {
    const auto start = steady::now();
    mp::process p(method, noop);
    p.start();
    p.join();
    samples.push_back(seconds_since(start));
  }
  return median(samples);
}

void memory() {
  std::vector<mp::start_method> methods{mp::start_method::fork, mp::start_method::spawn};
  if (mp::start_method_available(mp::start_method::forkserver)) {
    methods.push_back(mp::start_method::forkserver);
    (void)start_join(mp::start_method::forkserver);  // the server's own start, not measured
  }
  std::printf("### Process start+join as this process's touched memory grows\n\n");
  std::printf("| touched memory |");
  for (auto m : methods)
    std::printf(" %s |", name_of(m));
  std::printf("\n|---|");
  for (std::size_t i = 0; i < methods.size(); ++i)
    std::printf("---|");
  std::printf("\n");
  for (std::size_t megabytes : {std::size_t{0}, std::size_t{100}, std::size_t{1000}}) {
    std::vector<char> held(megabytes * 1000 * 1000);
    if (!held.empty()) std::memset(held.data(), 1, held.size());  // touched: resident
    volatile char kept = held.empty() ? 0 : held.back();  // the stores are not optimised away
    (void)kept;
    std::printf("| %zu MB |", megabytes);
    for (auto m : methods)
      std::printf(" %.0f us |", start_join(m) * 1e6);
    std::printf("\n");
    std::fflush(stdout);
  }
  std::printf(
      "\n(median of 30 starts each; the fork server was started before the 0 MB row, so it\n"
      "holds none of this memory)\n\n");
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::vector<std::string> parts(argv + 1, argv + argc);
  if (parts.empty()) parts = {"batches", "pools", "memory"};
  for (const auto& part : parts) {
    if (part == "batches") {
      batches();
    } else if (part == "pools") {
      pools();
    } else if (part == "memory") {
      memory();
    } else {
      std::fprintf(stderr, "multiproc_scaling: unknown part %s (batches, pools, memory)\n",
                   part.c_str());
      return 2;
    }
  }
  return 0;
}
