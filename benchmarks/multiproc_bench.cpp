// multiproc_bench: the library's costs, per start method, with Google Benchmark.
//
// Every benchmark is named "<workload>/<start method>", where <workload> is the same key
// python_bench.py uses, so run.py can put multiproc, Python and the machine's limits (from
// multiproc_limits) side by side. All times are wall-clock (UseRealTime): the work happens in
// other processes, so the parent's CPU time says nothing.
//
//   process_start_join             mp::process(noop): start() + join()
//   pool_start_close_join/2        construct a pool of 2 workers, close(), join()
//   pool_start_close_join/cpu_count  the same with mp::cpu_count() workers
//   apply_roundtrip                one pool.apply(square, i), sequentially (latency)
//   apply_async/20000              20 000 apply_async, then get() on every result (throughput)
//   as_completed/1000              1 000 apply_async, then mp::as_completed over them, get()
//                                  on each (Python: ProcessPoolExecutor.submit + as_completed)
//   map_chunksize1/100000          pool.map(square, 100 000 ints, chunksize 1)
//   map_default/100000, /1000000   pool.map(square, xs) with the default chunksize
//   payload/<size>                 pool.apply(size_of, std::vector<char>(size)): bytes/s
//   payload_round_trip/256MiB      pool.apply(same_bytes, std::vector<char>(256 MiB)): the
//                                  bytes there and back, four copies into fresh pages
//   queue_transfer/100000          a producer process puts 100 000 ints on an mp::queue, this
//                                  process gets them (the producer's start and join included)
//   pipe_pingpong                  one int sent over mp::pipe to an echoing process and back
//   mutex_uncontended              mp::mutex acquire + release, nobody else wants it
//   mutex_pingpong                 two mutexes handed back and forth with a child process
//   shared_array_sum/256MiB        a 256 MiB mp::array<double> to a pool task that sums it
//   shared_array_handover/256MiB   the same array to a task that only reads its size
//   queue_item/64MiB               a 64 MiB std::vector<char> put on a queue, taken by a
//                                  process that answers its size on a second queue
//
// The pool-at-work workloads (apply, map, payload) use one pool of mp::cpu_count() workers,
// built and warmed up before the timed loop, like Python's Pool() default.
#include <benchmark/benchmark.h>
#include <multiproc/multiproc.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mp = multiproc;

namespace {

void noop() {}

int square(int x) {
  return x * x;
}

std::size_t size_of(const std::vector<char>& payload) {
  return payload.size();
}

const char* method_name(mp::start_method method) {
  switch (method) {
    case mp::start_method::fork:
      return "fork";
    case mp::start_method::spawn:
      return "spawn";
    case mp::start_method::forkserver:
      return "forkserver";
    case mp::start_method::automatic:
      return "auto";
    case mp::start_method::mpi:
      return "mpi";
  }
  return "unknown";
}

mp::pool make_pool(mp::start_method method, unsigned processes) {
  return mp::pool(mp::pool_options{.processes = processes, .method = method});
}

// Runs a small map so that every worker has started (a spawned one has re-executed and
// finished its handshake) before anything is timed: the timed loop measures the pool at work.
void warm_up(mp::pool& pool) {
  std::vector<int> xs(1000);
  for (int i = 0; i < 1000; ++i)
    xs[static_cast<std::size_t>(i)] = i;
  benchmark::DoNotOptimize(pool.map(square, xs));
}

std::vector<int> iota_ints(std::size_t n) {
  std::vector<int> xs(n);
  // The values stay small so x*x never overflows int (the results are not checked anyway).
  for (std::size_t i = 0; i < n; ++i)
    xs[i] = static_cast<int>(i % 30000);
  return xs;
}

void process_start_join(benchmark::State& state, mp::start_method method) {
  for (auto _ : state) {
    mp::process p(method, noop);
    p.start();
    p.join();
    if (p.exitcode() != 0) {
      state.SkipWithError("child exited with a non-zero code");
      break;
    }
  }
}

void pool_start_close_join(benchmark::State& state, mp::start_method method, unsigned workers) {
  for (auto _ : state) {
    mp::pool pool = make_pool(method, workers);
    pool.close();
    pool.join();
  }
}

void apply_roundtrip(benchmark::State& state, mp::start_method method) {
  mp::pool pool = make_pool(method, mp::cpu_count());
  warm_up(pool);
  int i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(pool.apply(square, i++ % 30000));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void apply_async(benchmark::State& state, mp::start_method method, int calls) {
  mp::pool pool = make_pool(method, mp::cpu_count());
  warm_up(pool);
  std::vector<mp::async_result<int>> results;
  results.reserve(static_cast<std::size_t>(calls));
  for (auto _ : state) {
    for (int i = 0; i < calls; ++i)
      results.push_back(pool.apply_async(square, i));
    for (auto& r : results)
      benchmark::DoNotOptimize(r.get());
    // Destroying the futures is part of the workload: Python pays for its ApplyResults too.
    results.clear();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * calls);
}

void as_completed(benchmark::State& state, mp::start_method method, int calls) {
  mp::pool pool = make_pool(method, mp::cpu_count());
  warm_up(pool);
  std::vector<mp::async_result<int>> results;
  results.reserve(static_cast<std::size_t>(calls));
  for (auto _ : state) {
    for (int i = 0; i < calls; ++i)
      results.push_back(pool.apply_async(square, i));
    for (std::size_t i : mp::as_completed(results))
      benchmark::DoNotOptimize(results[i].get());
    results.clear();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * calls);
}

void map_squares(benchmark::State& state, mp::start_method method, std::size_t items,
                 std::size_t chunksize) {
  mp::pool pool = make_pool(method, mp::cpu_count());
  warm_up(pool);
  // Built outside the timed loop, as Python's list is.
  const std::vector<int> xs = iota_ints(items);
  for (auto _ : state) {
    benchmark::DoNotOptimize(pool.map(square, xs, chunksize));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * items));
}

void payload(benchmark::State& state, mp::start_method method, std::size_t bytes) {
  mp::pool pool = make_pool(method, mp::cpu_count());
  warm_up(pool);
  // Filled (so the pages exist) before timing: the workload is moving the argument to the
  // worker, not the parent allocating it.
  const std::vector<char> data(bytes, 'p');
  for (auto _ : state) {
    const std::size_t got = pool.apply(size_of, data);
    if (got != bytes) {
      state.SkipWithError("the worker saw a payload of the wrong size");
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

std::vector<char> same_bytes(std::vector<char> payload) {
  return payload;
}

void payload_round_trip(benchmark::State& state, mp::start_method method, std::size_t bytes) {
  mp::pool pool = make_pool(method, mp::cpu_count());
  warm_up(pool);
  const std::vector<char> data(bytes, 'p');
  for (auto _ : state) {
    const std::vector<char> back = pool.apply(same_bytes, data);
    if (back.size() != bytes || back[bytes - 1] != 'p') {
      state.SkipWithError("the payload came back damaged");
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes * 2));
}

void put_ints(mp::queue<int> q, int count) {
  for (int i = 0; i < count; ++i)
    q.put(i);
}

void queue_transfer(benchmark::State& state, mp::start_method method, int count) {
  for (auto _ : state) {
    mp::queue<int> q;
    mp::process producer(method, put_ints, q, count);
    producer.start();
    long sum = 0;
    for (int i = 0; i < count; ++i)
      sum += q.get();
    producer.join();
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * count);
}

void echo_ints(mp::connection c) {
  try {
    for (;;)
      c.send(c.recv<int>());
  } catch (const mp::closed_error&) {
  }
}

void pipe_pingpong(benchmark::State& state, mp::start_method method) {
  auto [mine, theirs] = mp::pipe();
  mp::process echo(method, echo_ints, theirs);
  echo.start();
  theirs.close();
  mine.send(0);  // the child is up and answering before timing starts
  (void)mine.recv<int>();
  int i = 0;
  for (auto _ : state) {
    mine.send(i);
    benchmark::DoNotOptimize(mine.recv<int>());
    ++i;
  }
  mine.close();
  echo.join();
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void answer_sizes(mp::queue<std::vector<char>> in, mp::queue<std::size_t> out) {
  try {
    for (;;)
      out.put(in.get().size());
  } catch (const mp::closed_error&) {
  }
}

void queue_item(benchmark::State& state, mp::start_method method, std::size_t bytes) {
  mp::queue<std::vector<char>> in;
  mp::queue<std::size_t> out;
  mp::process consumer(method, answer_sizes, in, out);
  consumer.start();
  const std::vector<char> item(bytes, 'q');
  for (auto _ : state) {
    in.put(item);
    if (out.get() != bytes) {
      state.SkipWithError("the consumer saw an item of the wrong size");
      break;
    }
  }
  consumer.terminate();
  consumer.join();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

void mutex_uncontended(benchmark::State& state, mp::start_method) {
  mp::mutex m;
  for (auto _ : state) {
    m.acquire();
    m.release();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

/// The other side of mutex_pingpong: takes `ping` (released by the parent), releases `pong`.
void mutex_echo(mp::mutex ping, mp::mutex pong, mp::event stop) {
  while (!stop.is_set()) {
    if (!ping.acquire(std::chrono::milliseconds(100))) continue;
    pong.release();
  }
}

void mutex_pingpong(benchmark::State& state, mp::start_method method) {
  mp::mutex ping, pong;
  mp::event stop;
  ping.acquire();  // held: the child waits on it
  pong.acquire();  // held: released by the child, taken back here
  mp::process echo(method, mutex_echo, ping, pong, stop);
  echo.start();
  ping.release();
  pong.acquire();  // the child answers before timing starts
  for (auto _ : state) {
    ping.release();
    pong.acquire();
  }
  stop.set();
  echo.join();
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

double sum_doubles(mp::array<double> a) {
  double sum = 0;
  for (double x : a.span())
    sum += x;
  return sum;
}

std::size_t array_size(mp::array<double> a) {
  return a.size();
}

void shared_array_task(benchmark::State& state, mp::start_method method, std::size_t bytes,
                       bool sum) {
  mp::array<double> a(bytes / sizeof(double));
  for (std::size_t i = 0; i < a.size(); ++i)
    a[i] = 1.0;
  mp::pool pool(mp::pool_options{1, {}, 0, method});
  (void)pool.apply(array_size, a);  // the worker is up before timing starts
  for (auto _ : state) {
    if (sum) {
      benchmark::DoNotOptimize(pool.apply(sum_doubles, a));
    } else {
      benchmark::DoNotOptimize(pool.apply(array_size, a));
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

void register_all() {
  std::vector<mp::start_method> methods;
  for (auto m : {mp::start_method::fork, mp::start_method::spawn}) {
    if (mp::start_method_available(m)) methods.push_back(m);
  }
  // Registered workload by workload (not method by method) so that, with a filter on one
  // workload, both methods run back to back under the same machine conditions.
  auto reg = [](const std::string& workload, mp::start_method m, auto&& fn, auto... args) {
    const std::string name = workload + "/" + method_name(m);
    return benchmark::RegisterBenchmark(name.c_str(), fn, m, args...)->UseRealTime();
  };
  // The fork server (issue 13) only where starting is what is measured: once started, its
  // children are forked children, and every other workload is the fork rows' again. Its first
  // start also starts the server (about a spawn); the repetitions amortise it, as a program's
  // many starts do.
  std::vector<mp::start_method> starting = methods;
  if (mp::start_method_available(mp::start_method::forkserver)) {
    starting.push_back(mp::start_method::forkserver);
  }
  for (auto m : starting) {
    reg("process_start_join", m, process_start_join)->Unit(benchmark::kMicrosecond);
  }
  for (auto m : starting) {
    reg("pool_start_close_join/2", m, pool_start_close_join, 2u)->Unit(benchmark::kMicrosecond);
    reg("pool_start_close_join/cpu_count", m, pool_start_close_join, mp::cpu_count())
        ->Unit(benchmark::kMicrosecond);
  }
  for (auto m : methods) {
    reg("apply_roundtrip", m, apply_roundtrip)->Unit(benchmark::kMicrosecond);
  }
  for (auto m : methods) {
    reg("apply_async/20000", m, apply_async, 20000)->Unit(benchmark::kMillisecond);
  }
  for (auto m : methods) {
    reg("as_completed/1000", m, as_completed, 1000)->Unit(benchmark::kMillisecond);
  }
  for (auto m : methods) {
    reg("map_chunksize1/100000", m, map_squares, std::size_t{100000}, std::size_t{1})
        ->Unit(benchmark::kMillisecond);
    reg("map_default/100000", m, map_squares, std::size_t{100000}, std::size_t{0})
        ->Unit(benchmark::kMillisecond);
    reg("map_default/1000000", m, map_squares, std::size_t{1000000}, std::size_t{0})
        ->Unit(benchmark::kMillisecond);
  }
  struct size_label {
    const char* label;
    std::size_t bytes;
  };
  for (auto m : methods) {
    for (const size_label s :
         {size_label{"1KiB", std::size_t{1} << 10}, size_label{"1MiB", std::size_t{1} << 20},
          size_label{"64MiB", std::size_t{64} << 20},
          size_label{"256MiB", std::size_t{256} << 20}}) {
      reg(std::string("payload/") + s.label, m, payload, s.bytes)->Unit(benchmark::kMillisecond);
    }
  }
  for (auto m : methods) {
    reg("payload_round_trip/256MiB", m, payload_round_trip, std::size_t{256} << 20)
        ->Unit(benchmark::kMillisecond);
  }
  for (auto m : methods) {
    reg("queue_transfer/100000", m, queue_transfer, 100000)->Unit(benchmark::kMillisecond);
  }
  for (auto m : methods) {
    reg("pipe_pingpong", m, pipe_pingpong)->Unit(benchmark::kMicrosecond);
  }
  for (auto m : methods) {
    reg("queue_item/64MiB", m, queue_item, std::size_t{64} << 20)->Unit(benchmark::kMillisecond);
  }
  for (auto m : methods) {
    reg("mutex_uncontended", m, mutex_uncontended)->Unit(benchmark::kNanosecond);
  }
  for (auto m : methods) {
    reg("mutex_pingpong", m, mutex_pingpong)->Unit(benchmark::kMicrosecond);
  }
  for (auto m : methods) {
    reg("shared_array_sum/256MiB", m, shared_array_task, std::size_t{256} << 20, true)
        ->Unit(benchmark::kMillisecond);
    reg("shared_array_handover/256MiB", m, shared_array_task, std::size_t{256} << 20, false)
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // First: a spawned child re-executes this binary and is diverted here into its work; it
  // must not reach Google Benchmark's flag parsing or run benchmarks of its own.
  mp::init(argc, argv);
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
