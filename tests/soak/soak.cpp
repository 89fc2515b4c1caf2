// multiproc_soak: a long random mix of processes and pools on one start method, checking every
// 30 s and at the end that nothing accumulates (issue 9, item 9; scripts/soak.sh runs it).
//
//   multiproc_soak --method fork|spawn|forkserver --seconds N [--seed S] [--check-every N]
//   multiproc_soak --methods            the start methods this build has, one a line
//
// Exit status: 0 clean; 1 a figure above its bound, or an operation's outcome wrong; 2 a hang
// (no operation finished for --hang-after seconds); 64 bad arguments.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include <multiproc/multiproc.hpp>

#include "figures.hpp"
#include "operations.hpp"

namespace mp = multiproc;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  mp::start_method method = mp::start_method::fork;
  std::string method_name = "fork";
  long seconds = 120;
  long check_every = 30;
  long hang_after = 240;
  std::uint64_t seed = 0;
  bool seeded = false;
};

bool parse_method(const std::string& name, mp::start_method& method) {
  if (name == "fork")
    method = mp::start_method::fork;
  else if (name == "spawn")
    method = mp::start_method::spawn;
  else if (name == "forkserver")
    method = mp::start_method::forkserver;
  else
    return false;
  return mp::start_method_available(method);
}

int usage(const char* why) {
  std::cerr << "multiproc_soak: " << why
            << "\nusage: multiproc_soak --method fork|spawn|forkserver --seconds N [--seed S]"
               " [--check-every N] [--hang-after N] | --methods\n";
  return 64;
}

/// The figures over the run: at the baseline, now, and the highest seen at any check.
struct record {
  soak::figures baseline{}, last{}, highest{};
  int checks = 0;
  void take(const soak::figures& now) {
    last = now;
    for (std::size_t i = 0; i < soak::figure_count; ++i)
      highest[i] = checks == 0 ? now[i] : std::max(highest[i], now[i]);
    ++checks;
  }
};

/// A check: the countable figures settle for up to 5 s (a worker's supervisor may still be
/// reaping it as its pool's destructor returns), then every figure is compared with its bound.
soak::figure check(record& figures) {
  soak::figures now = soak::measure();
  const auto settle_until = clock_type::now() + std::chrono::seconds(5);
  while (soak::first_breach(figures.baseline, now) != soak::figure::count_ &&
         clock_type::now() < settle_until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling /proc: a hang guard
    now = soak::measure();
  }
  figures.take(now);
  return soak::first_breach(figures.baseline, now);
}

void print_figures(const std::string& tag, const record& r, double elapsed, long operations) {
  std::cout << tag << " t=" << static_cast<long>(elapsed) << "s ops=" << operations;
  for (std::size_t i = 0; i < soak::figure_count; ++i)
    std::cout << " | " << soak::name_of(static_cast<soak::figure>(i)) << ' ' << r.last[i];
  std::cout << std::endl;
}

void print_summary(const options& o, const soak::tally& t, const record& r, double elapsed,
                   const std::string& verdict) {
  long total = 0;
  for (const auto& [kind, count] : t.done)
    total += count;
  std::printf("=== summary: %s, seed %llu, %.0f s, %ld operations, %d checks: %s\n",
              o.method_name.c_str(), static_cast<unsigned long long>(o.seed), elapsed, total,
              r.checks, verdict.c_str());
  std::printf("%-24s %10s\n", "operation", "done");
  for (const auto& [kind, count] : t.done)
    std::printf("%-24s %10ld\n", kind.c_str(), count);
  std::printf("%-24s %10s %10s %10s %12s\n", "figure", "baseline", "end", "max", "bound");
  for (std::size_t i = 0; i < soak::figure_count; ++i) {
    const auto f = static_cast<soak::figure>(i);
    const long allowed = soak::allowance(f);
    const std::string bound =
        allowed < 0 ? "(reported)" : "<= " + std::to_string(r.baseline[i] + allowed);
    std::printf("%-24s %10ld %10ld %10ld %12s\n", soak::name_of(f), r.baseline[i], r.last[i],
                r.highest[i], bound.c_str());
  }
  std::printf("=== end of summary: %s\n", o.method_name.c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--methods") {
      for (const char* name : {"fork", "spawn", "forkserver"}) {
        mp::start_method m;
        if (parse_method(name, m)) std::cout << name << '\n';
      }
      return 0;
    } else if (arg == "--method" && has_value) {
      o.method_name = argv[++i];
      if (!parse_method(o.method_name, o.method)) return usage("unknown or unavailable method");
    } else if (arg == "--seconds" && has_value) {
      o.seconds = std::atol(argv[++i]);
    } else if (arg == "--check-every" && has_value) {
      o.check_every = std::max(1L, std::atol(argv[++i]));
    } else if (arg == "--hang-after" && has_value) {
      o.hang_after = std::max(10L, std::atol(argv[++i]));
    } else if (arg == "--seed" && has_value) {
      o.seed = std::strtoull(argv[++i], nullptr, 10);
      o.seeded = true;
    } else {
      return usage(("unknown argument: " + arg).c_str());
    }
  }
  if (o.seconds <= 0) return usage("--seconds must be positive");
  if (!o.seeded) o.seed = std::random_device{}() * 4294967296ull + std::random_device{}();
  std::cout << "soak " << o.method_name << ": seed " << o.seed << " (replay: --method "
            << o.method_name << " --seed " << o.seed << "), " << o.seconds << " s, pid "
            << ::getpid() << std::endl;

  soak::tally tally;
  // The hang guard: a thread that ends the run if no operation finishes for hang_after
  // seconds. Operations that can wait with a timeout do, for 120 s at most; this catches the
  // waits that have none (map, imap, a pool's close and join, its destructor).
  std::mutex guard_lock;
  std::condition_variable guard_wake;
  bool finished = false;
  std::thread watchdog([&] {
    // Wakes every 10 s: a hang is reported within hang_after + 10 s of the last operation.
    long seen = tally.progress.load();
    auto since = clock_type::now();
    std::unique_lock lock(guard_lock);
    while (!guard_wake.wait_for(lock, std::chrono::seconds(10), [&] { return finished; })) {
      const long now = tally.progress.load();
      if (now != seen) {
        seen = now;
        since = clock_type::now();
      } else if (clock_type::now() - since > std::chrono::seconds(o.hang_after)) {
        std::printf("FAIL %s: hang: no operation finished in %ld s, in %s (seed %llu)\n",
                    o.method_name.c_str(), o.hang_after, tally.current.load(),
                    static_cast<unsigned long long>(o.seed));
        std::fflush(stdout);
        soak::kill_children();
        std::_Exit(2);
      }
    }
  });

  soak::runner runner(o.method, o.seed, tally);
  std::mt19937_64 choose(o.seed ^ 0x5eed);
  const auto start = clock_type::now();
  const auto elapsed = [&] {
    return std::chrono::duration<double>(clock_type::now() - start).count();
  };
  record figures;
  std::string verdict = "clean";
  int status = 0;
  try {
    // Warm-up: every kind once, then the mix for a tenth of the run (at most 20 s): whatever
    // is made once per process (the fork server, malloc's arenas, the loader's lazy binding)
    // exists before the baseline.
    runner.every_kind_once();
    const double warm_up = std::min(20.0, o.seconds / 10.0);
    while (elapsed() < warm_up)
      choose() % 3 == 0 ? runner.process_episode() : runner.pool_episode();
    figures.baseline = soak::measure();
    figures.take(figures.baseline);
    print_figures("baseline", figures, elapsed(), tally.progress.load());
    auto next_check = clock_type::now() + std::chrono::seconds(o.check_every);
    const auto end = start + std::chrono::seconds(o.seconds);
    for (;;) {
      const bool last = clock_type::now() >= end;
      if (last || clock_type::now() >= next_check) {
        const soak::figure breach = check(figures);
        print_figures(last ? "end" : "check", figures, elapsed(), tally.progress.load());
        if (breach != soak::figure::count_) {
          const auto i = static_cast<std::size_t>(breach);
          verdict = std::string("BREACH of ") + soak::name_of(breach) + ": baseline " +
                    std::to_string(figures.baseline[i]) + ", now " +
                    std::to_string(figures.last[i]) + ", allowed " +
                    std::to_string(figures.baseline[i] + soak::allowance(breach));
          status = 1;
          break;
        }
        if (last) break;
        next_check = clock_type::now() + std::chrono::seconds(o.check_every);
      }
      choose() % 3 == 0 ? runner.process_episode() : runner.pool_episode();
    }
  } catch (const std::exception& e) {
    verdict = std::string("FAILED in ") + tally.current.load() + ": " + e.what();
    status = 1;
  }
  {
    std::lock_guard lock(guard_lock);
    finished = true;
  }
  guard_wake.notify_all();
  watchdog.join();
  if (status != 0) std::printf("FAIL %s: %s\n", o.method_name.c_str(), verdict.c_str());
  print_summary(o, tally, figures, elapsed(), verdict);
  return status;
}
