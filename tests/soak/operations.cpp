// The soak's operations. Targets are plain functions (what a target may be); each operation
// states its expected outcome and throws soak::failure on anything else.
#include "operations.hpp"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace soak {

namespace {

// ---- targets -----------------------------------------------------------------------------

/// The payloads' contents: a cheap mix of a seed and a position, so a block of 32 MiB is made
/// and checked in a few milliseconds and any misplaced word changes the checksum.
std::uint64_t word(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
std::vector<std::uint64_t> make_block(std::uint64_t seed, std::size_t words) {
  std::vector<std::uint64_t> block(words);
  for (std::size_t i = 0; i < words; ++i)
    block[i] = word(seed, i);
  return block;
}
/// Order-sensitive: a block with two words swapped sums differently.
std::uint64_t checksum(std::vector<std::uint64_t> block) {
  std::uint64_t sum = 0;
  for (std::uint64_t w : block)
    sum = sum * 1099511628211ull + w;
  return sum;
}
std::uint64_t expected_checksum(std::uint64_t seed, std::size_t words) {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < words; ++i)
    sum = sum * 1099511628211ull + word(seed, i);
  return sum;
}

long triple(long x) {
  return 3 * x + 1;
}
/// Dies by SIGKILL on `doomed` (a worker lost in the middle of a map), else as triple.
long triple_or_die(std::pair<long, long> item) {
  if (item.first == item.second) ::raise(SIGKILL);
  return triple(item.first);
}
void die_by_sigkill() {
  ::raise(SIGKILL);
}
void exit_with(int code) {
  std::exit(code);
}
void sleep_for_ever() {
  for (;;)
    ::pause();
}
/// Tells the soak who it is, then waits to be killed from outside.
int report_pid_and_wait(mp::queue<long> pids) {
  pids.put(static_cast<long>(::getpid()));
  sleep_for_ever();
  return 0;
}
void produce(mp::queue<long> items, long count) {
  for (long i = 0; i < count; ++i)
    items.put(triple(i));
}
void echo_tripled(mp::connection link, int count) {
  for (int i = 0; i < count; ++i)
    link.send(triple(link.recv<long>()));
}

// ---- checks ------------------------------------------------------------------------------

[[noreturn]] void fail(const std::string& what) {
  throw failure(what);
}
void expect_exitcode(mp::process& p, int expected, const char* what) {
  if (!p.join(120s)) fail(std::string(what) + ": join did not return within 120 s");
  const std::optional<int> code = p.exitcode();
  if (code != expected) {
    fail(std::string(what) + ": exit code " + (code ? std::to_string(*code) : "none") +
         ", expected " + std::to_string(expected));
  }
}
template <class Result>
void expect_worker_lost(Result&& get, const char* what) {
  try {
    (void)get();
  } catch (const mp::worker_lost&) {
    return;
  } catch (const std::exception& e) {
    fail(std::string(what) + ": expected worker_lost, got " + e.what());
  }
  fail(std::string(what) + ": expected worker_lost, got a value");
}
template <class Value>
void expect_equal(const Value& got, const Value& expected, const char* what) {
  if (!(got == expected)) fail(std::string(what) + ": wrong result");
}

std::vector<long> numbers(std::size_t count) {
  std::vector<long> items(count);
  for (std::size_t i = 0; i < count; ++i)
    items[i] = static_cast<long>(i);
  return items;
}

}  // namespace

// ---- processes ---------------------------------------------------------------------------

void runner::one_process_operation(int kind) {
  switch (kind) {
    case 0: {
      begin("process_exit");
      const int code = pick(100);
      mp::process p(method_, exit_with, code);
      p.start();
      expect_exitcode(p, code, "process exit(code)");
      done("process_exit");
      break;
    }
    case 1: {
      begin("process_terminate");
      mp::process p(method_, sleep_for_ever);
      p.start();
      if (pick(2) == 0) std::this_thread::yield();  // sometimes before it runs, sometimes after
      p.terminate();
      expect_exitcode(p, -SIGTERM, "process terminate");
      done("process_terminate");
      break;
    }
    case 2: {
      begin("process_kill");
      mp::process p(method_, sleep_for_ever);
      p.start();
      p.kill();
      expect_exitcode(p, -SIGKILL, "process kill");
      done("process_kill");
      break;
    }
    case 3: {
      begin("process_self_kill");
      mp::process p(method_, die_by_sigkill);
      p.start();
      expect_exitcode(p, -SIGKILL, "process killed by itself");
      done("process_self_kill");
      break;
    }
    case 4: {
      begin("process_queue");
      const long count = 1 + pick(500);
      mp::queue<long> items;
      mp::process p(method_, produce, items, count);
      p.start();
      for (long i = 0; i < count; ++i) {
        const std::optional<long> item = items.get(120s);
        if (!item) fail("process queue: item " + std::to_string(i) + " not within 120 s");
        expect_equal(*item, triple(i), "process queue item");
      }
      expect_exitcode(p, 0, "process queue producer");
      done("process_queue");
      break;
    }
    default: {
      begin("process_pipe");
      const int count = 1 + pick(200);
      auto [mine, theirs] = mp::pipe();
      mp::process p(method_, echo_tripled, theirs, count);
      p.start();
      theirs.close();
      for (int i = 0; i < count; ++i) {
        mine.send(static_cast<long>(i));
        if (!mine.poll(120s)) fail("process pipe: no answer within 120 s");
        expect_equal(mine.recv<long>(), triple(i), "process pipe echo");
      }
      expect_exitcode(p, 0, "process pipe echo");
      done("process_pipe");
      break;
    }
  }
}

void runner::process_episode() {
  const int operations = 1 + pick(4);
  for (int i = 0; i < operations; ++i)
    one_process_operation(pick(process_kinds));
}

// ---- pools -------------------------------------------------------------------------------

void runner::one_pool_operation(mp::pool& pool, int kind) {
  switch (kind) {
    case 0: {
      begin("apply");
      const long x = pick(1 << 20);
      expect_equal(pool.apply(triple, x), triple(x), "apply");
      done("apply");
      break;
    }
    case 1: {
      begin("apply_async");
      const int count = 1 + pick(200);
      std::vector<mp::async_result<long>> results;
      for (int i = 0; i < count; ++i)
        results.push_back(pool.apply_async(triple, static_cast<long>(i)));
      for (int i = 0; i < count; ++i) {
        if (!results[i].wait_for(120s)) fail("apply_async: no result within 120 s");
        expect_equal(results[i].get(), triple(i), "apply_async");
      }
      done("apply_async");
      break;
    }
    case 2: {
      begin("map");
      const auto items = numbers(1 + static_cast<std::size_t>(pick(3000)));
      const std::size_t chunksize = pick(2) == 0 ? 0 : 1 + pick(50);
      const std::vector<long> got = pool.map(triple, items, chunksize);
      expect_equal(got.size(), items.size(), "map size");
      for (std::size_t i = 0; i < items.size(); ++i)
        expect_equal(got[i], triple(items[i]), "map");
      done("map");
      break;
    }
    case 3:
    case 4: {
      const bool ordered = kind == 3;
      const char* name = ordered ? "imap" : "imap_unordered";
      begin(name);
      const auto items = numbers(1 + static_cast<std::size_t>(pick(2000)));
      const std::size_t chunksize = 1 + pick(20);
      std::vector<int> seen(items.size(), 0);
      std::size_t next = 0;
      auto check = [&](long y) {
        if (y < 1 || (y - 1) % 3 != 0 || static_cast<std::size_t>((y - 1) / 3) >= items.size())
          fail(std::string(name) + ": a value no item gives");
        const auto i = static_cast<std::size_t>((y - 1) / 3);
        if (ordered && i != next) fail("imap: out of order");
        if (seen[i]++ != 0) fail(std::string(name) + ": an item twice");
        ++next;
      };
      if (ordered) {
        for (long y : pool.imap(triple, items, chunksize))
          check(y);
      } else {
        for (long y : pool.imap_unordered(triple, items, chunksize))
          check(y);
      }
      if (next != items.size()) fail(std::string(name) + ": items missing");
      done(name);
      break;
    }
    case 5: {
      begin("large_argument");
      const std::size_t words = (8 + pick(25)) * (std::size_t{1} << 17);  // 8-32 MiB
      const std::uint64_t seed = random_();
      expect_equal(pool.apply(checksum, make_block(seed, words)), expected_checksum(seed, words),
                   "large argument checksum");
      done("large_argument");
      break;
    }
    case 6: {
      begin("large_result");
      const std::size_t words = (8 + pick(25)) * (std::size_t{1} << 17);
      const std::uint64_t seed = random_();
      const std::vector<std::uint64_t> block = pool.apply(make_block, seed, words);
      expect_equal(checksum(block), expected_checksum(seed, words), "large result");
      done("large_result");
      break;
    }
    case 7: {
      begin("worker_self_kill");
      expect_worker_lost([&] { return pool.apply(die_by_sigkill); }, "a worker killing itself");
      expect_equal(pool.apply(triple, 5L), triple(5), "apply after a lost worker");
      done("worker_self_kill");
      break;
    }
    case 8: {
      begin("worker_killed_outside");
      mp::queue<long> pids;
      auto result = pool.apply_async(report_pid_and_wait, pids);
      const std::optional<long> pid = pids.get(120s);
      if (!pid) fail("worker killed from outside: no pid within 120 s");
      ::kill(static_cast<pid_t>(*pid), SIGKILL);
      expect_worker_lost([&] { return result.get(120s); }, "a worker killed from outside");
      done("worker_killed_outside");
      break;
    }
    case 9: {
      begin("map_with_kill");
      const long count = 1 + pick(1000);
      const long doomed = pick(static_cast<int>(count));
      std::vector<std::pair<long, long>> items;
      for (long i = 0; i < count; ++i)
        items.emplace_back(i, doomed);
      expect_worker_lost([&] { return pool.map(triple_or_die, items, 1 + pick(20)); },
                         "map with a worker killed");
      done("map_with_kill");
      break;
    }
    default: {
      // Each item is right or worker_lost (those in the doomed item's chunk), the doomed one
      // worker_lost, and every item comes out once.
      begin("imap_with_kill");
      const long count = 1 + pick(1000);
      const long doomed = pick(static_cast<int>(count));
      std::vector<std::pair<long, long>> items;
      for (long i = 0; i < count; ++i)
        items.emplace_back(i, doomed);
      long position = 0, lost = 0;
      auto results = pool.imap(triple_or_die, items, 1 + pick(10));
      for (auto it = results.begin(); it != results.end(); ++it, ++position) {
        try {
          const long y = *it;
          if (position == doomed) fail("imap with a kill: the doomed item gave a value");
          expect_equal(y, triple(position), "imap with a kill");
        } catch (const mp::worker_lost&) {
          ++lost;
        }
      }
      if (position != count || lost == 0) fail("imap with a kill: items missing or none lost");
      done("imap_with_kill");
      break;
    }
  }
}

void runner::end_pool(mp::pool& pool, pool_end how) {
  switch (how) {
    case pool_end::close_join:
      begin("pool_close_join");
      pool.close();
      pool.join();
      done("pool_close_join");
      break;
    case pool_end::drop:
      break;  // the destructor closes and joins (pool_episode counts it)
    case pool_end::terminate: {
      // Tasks pending at terminate() either finished (right value) or fail with state_error.
      begin("pool_terminate");
      std::vector<mp::async_result<long>> pending;
      const int count = 1 + pick(100);
      for (int i = 0; i < count; ++i)
        pending.push_back(pool.apply_async(triple, static_cast<long>(i)));
      pool.terminate();
      for (int i = 0; i < count; ++i) {
        try {
          expect_equal(pending[i].get(120s), triple(i), "a task finished before terminate");
        } catch (const mp::state_error&) {
        } catch (const failure&) {
          throw;
        } catch (const std::exception& e) {
          fail(std::string("terminate: a pending task failed with ") + e.what());
        }
      }
      done("pool_terminate");
      break;
    }
  }
}

void runner::pool_episode() {
  begin("pool_create");
  const unsigned workers = 1 + static_cast<unsigned>(pick(3));
  const std::size_t maxtasks = pick(3) == 0 ? 1 + pick(4) : 0;
  const int roll = pick(20);
  const pool_end how = roll < 12   ? pool_end::close_join
                       : roll < 17 ? pool_end::drop
                                   : pool_end::terminate;
  {
    mp::pool pool(mp::pool_options{workers, {}, maxtasks, method_});
    done("pool_create");
    const int operations = 1 + pick(6);
    for (int i = 0; i < operations; ++i)
      one_pool_operation(pool, pick(pool_kinds));
    end_pool(pool, how);
    if (how == pool_end::drop) begin("pool_drop");
  }
  if (how == pool_end::drop) done("pool_drop");
}

void runner::every_kind_once() {
  for (int kind = 0; kind < process_kinds; ++kind)
    one_process_operation(kind);
  mp::pool pool(mp::pool_options{2, {}, 0, method_});
  for (int kind = 0; kind < pool_kinds; ++kind)
    one_pool_operation(pool, kind);
  end_pool(pool, pool_end::close_join);
}

}  // namespace soak
