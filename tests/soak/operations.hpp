// The soak's operations: episodes of processes and pools on one start method, drawn from a
// seeded generator. Every outcome is checked; anything but the expected one throws failure.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <random>
#include <stdexcept>
#include <string>

#include <multiproc/multiproc.hpp>

namespace soak {

/// An outcome other than the one expected (a wrong value, an unexpected error, a hang).
class failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// What the run did, per kind of operation, and what it is doing now (for the hang guard).
struct tally {
  std::map<std::string, long> done;
  std::atomic<long> progress{0};  // bumped by every operation; the watchdog reads it
  std::atomic<const char*> current{"warm-up"};
  void count(const char* kind) {
    ++done[kind];
    ++progress;
  }
};

class runner {
 public:
  runner(multiproc::start_method method, std::uint64_t seed, tally& counts)
      : method_(method), random_(seed), tally_(counts) {}

  /// A few processes: exit codes, terminate, kill, a self-kill, a queue and a pipe.
  void process_episode();
  /// A pool (1-3 workers, sometimes maxtasksperchild), a few operations on it, then closed
  /// and joined, dropped, or terminated with tasks pending.
  void pool_episode();
  /// Every kind of operation once (the warm-up: whatever is made lazily exists afterwards).
  void every_kind_once();

 private:
  enum class pool_end { close_join, drop, terminate };
  void one_process_operation(int kind);
  void one_pool_operation(multiproc::pool& pool, int kind);
  void end_pool(multiproc::pool& pool, pool_end how);
  int pick(int below) { return std::uniform_int_distribution<int>(0, below - 1)(random_); }
  void begin(const char* kind) { tally_.current = kind; }
  void done(const char* kind) { tally_.count(kind); }

  multiproc::start_method method_;
  std::mt19937_64 random_;
  tally& tally_;
};

constexpr int process_kinds = 6;
constexpr int pool_kinds = 11;

}  // namespace soak
