// A worker given a huge argument holds it about once: the shared block it arrived in is given
// back as it is decoded, so the mapped and decoded copies never coexist in full (Linux).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"
#include "support_process_facts.hpp"

namespace mp = multiproc;
using posix_worker_memory = multiproc_test::checked;

#if defined(__linux__) && !defined(MULTIPROC_TEST_SANITIZED)
namespace {

constexpr std::size_t payload_size = std::size_t{128} << 20;

long status_kib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

/// In the worker: resets its peak to what it holds now (a forked worker inherits its
/// parent's peak) and returns that.
long reset_peak_kib(int) {
  std::ofstream("/proc/self/clear_refs") << "5";
  return status_kib("VmHWM");
}

/// In a worker: how many shared blocks (payload memfds) its parent holds right now (the pool's
/// process: on forkserver, not the server that forked the worker).
int parent_payload_blocks(std::vector<char> payload) {
  (void)payload;
  const std::string dir = "/proc/" + std::to_string(mp::this_process::parent_id()) + "/fd/";
  int blocks = 0;
  for (int fd = 0; fd < 4096; ++fd) {
    char target[256];
    const ssize_t n = ::readlink((dir + std::to_string(fd)).c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    if (multiproc_test::names_shared_block(std::string(target, static_cast<std::size_t>(n)))) {
      ++blocks;
    }
  }
  return blocks;
}

/// An item whose encoding fails when it is poisoned.
struct maybe_poisoned {
  std::vector<char> data;
  bool poisoned = false;
  template <class Archive>
  void save(Archive& archive) const {
    if (poisoned) throw std::runtime_error("poisoned item");
    archive(data);
  }
  template <class Archive>
  void load(Archive& archive) {
    archive(data);
  }
};

long size_of(maybe_poisoned item) {
  return static_cast<long>(item.data.size());
}

/// A payload that is slow to encode (as a large user type can be), so a test can act while
/// the caller is encoding the next chunk of a paced map.
struct slow_to_encode {
  std::vector<char> data;
  template <class Archive>
  void save(Archive& archive) const {
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
    archive(data);
  }
  template <class Archive>
  void load(Archive& archive) {
    archive(data);
  }
};

/// Marks that it started, then naps: a chunk the test can terminate the pool under.
long mark_then_nap(std::string marker, slow_to_encode payload) {
  std::ofstream(marker) << "started\n";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  return static_cast<long>(payload.data.size());
}

/// In the worker, with the argument decoded and alive: the peak since the reset.
long peak_kib_holding(std::vector<char> payload) {
  return payload.size() == payload_size && payload[payload_size - 1] == 7 ? status_kib("VmHWM")
                                                                          : -1;
}

}  // namespace

TEST_F(posix_worker_memory, huge_argument_is_held_about_once_in_the_worker) {
  for (const auto method : multiproc_test::pool_methods()) {
    mp::pool pool(mp::pool_options{1, {}, 0, method});
    const long base = pool.apply(reset_peak_kib, 0);
    ASSERT_GT(base, 0);
    const long peak = pool.apply(peak_kib_holding, std::vector<char>(payload_size, 7));
    ASSERT_GT(peak, 0) << "the argument arrived damaged";
    const double copies = static_cast<double>(peak - base) * 1024.0 / payload_size;
    // One copy is the decoded argument itself; mapped and decoded in full at once would be
    // two.
    EXPECT_GT(copies, 0.9);
#if defined(MULTIPROC_TEST_POSIX_PORTABLE)
    // No portable call gives back part of a shared memory object (Linux punches holes in a
    // memfd as it is decoded): the worker maps the whole block next to its copy, no more.
    EXPECT_LT(copies, 2.5) << "the worker held more than the block and its copy";
#else
    EXPECT_LT(copies, 1.5) << "the worker held the argument's shared block next to its copy";
#endif
  }
}

TEST_F(posix_worker_memory, a_huge_map_is_encoded_as_workers_take_its_chunks) {
  // 24 chunks of 8 MiB: all encoded at once, the parent would hold 24 blocks (192 MiB) before
  // the first chunk ran. Paced, about 64 MiB wait for a worker at any time (8 blocks), plus
  // those the workers hold.
  constexpr std::size_t item_size = std::size_t{8} << 20;
  const std::vector<std::vector<char>> items(24, std::vector<char>(item_size, 1));
  for (const auto method : multiproc_test::pool_methods()) {
    mp::pool pool(mp::pool_options{2, {}, 0, method});
    const std::vector<int> seen = pool.map(parent_payload_blocks, items, 1);
    ASSERT_EQ(seen.size(), items.size());
    const int most = *std::max_element(seen.begin(), seen.end());
    EXPECT_GE(most, 1);  // the counting itself works: the running chunk's block is there
    EXPECT_LE(most, 14) << "more chunks were encoded ahead than the 64 MiB budget allows";
    // map_async promises every chunk encoded before it returns: all 24 at once.
    const std::vector<int> eager = pool.map_async(parent_payload_blocks, items, 1).get();
    EXPECT_GE(*std::max_element(eager.begin(), eager.end()), 20);
  }
}

TEST_F(posix_worker_memory, an_item_that_cannot_be_encoded_late_in_a_paced_map_fails_the_map) {
  // 9 chunks of 8 MiB are encoded up front (past the 64 MiB budget), the rest as workers
  // take chunks: the poisoned 11th fails there, and map() still reports it as a
  // serialization_error once the chunks already running have finished.
  std::vector<maybe_poisoned> items(12);
  for (auto& item : items)
    item.data.assign(std::size_t{8} << 20, 2);
  items[10].poisoned = true;
  const auto before = multiproc_test::count_resources();
  {
    mp::pool pool(mp::pool_options{2, {}, 0, multiproc_test::pool_methods().front()});
    try {
      (void)pool.map(size_of, items, 1);
      ADD_FAILURE() << "map() returned although an item could not be encoded";
    } catch (const mp::serialization_error& e) {
      EXPECT_NE(std::string(e.what()).find("poisoned item"), std::string::npos) << e.what();
    }
    EXPECT_EQ(pool.apply(size_of, items[0]), static_cast<long>(std::size_t{8} << 20));
  }
  EXPECT_TRUE(multiproc_test::same_resources(before));
}

TEST_F(posix_worker_memory, terminate_during_a_paced_map_fails_it_with_state_error) {
  // The caller is still encoding chunks (paced, each 40 ms) when another thread terminates
  // the pool as the first chunk starts: the part being encoded and those after it fail as
  // cancelled, and map() throws instead of waiting for a worker that never comes.
  const std::string marker = multiproc_test::temporary_path("paced-map-started");
  std::vector<std::tuple<std::string, slow_to_encode>> items;
  for (int i = 0; i < 12; ++i)
    items.emplace_back(marker, slow_to_encode{std::vector<char>(std::size_t{8} << 20, 3)});
  const auto before = multiproc_test::count_resources();
  {
    mp::pool pool(mp::pool_options{1, {}, 0, multiproc_test::pool_methods().front()});
    std::thread terminator([&] {
      multiproc_test::within(std::chrono::seconds(30),
                             [&] { return std::ifstream(marker).good(); });
      pool.terminate();
    });
    auto mapped = std::async(std::launch::async, [&] {
      EXPECT_THROW((void)pool.starmap(mark_then_nap, items, 1), mp::state_error);
    });
    if (mapped.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      ADD_FAILURE() << "map() never returned after terminate()";  // hang guard
      std::_Exit(1);
    }
    terminator.join();
  }
  std::remove(marker.c_str());
  EXPECT_TRUE(multiproc_test::same_resources(before));
}
#else
TEST_F(posix_worker_memory, huge_argument_is_held_about_once_in_the_worker) {
  GTEST_SKIP() << "Linux without sanitizers only: shared blocks are Linux-only on POSIX, and a "
                  "sanitizer's shadow memory changes what peak memory means";
}
TEST_F(posix_worker_memory, a_huge_map_is_encoded_as_workers_take_its_chunks) {
  GTEST_SKIP() << "Linux without sanitizers only (shared blocks, /proc)";
}
TEST_F(posix_worker_memory, an_item_that_cannot_be_encoded_late_in_a_paced_map_fails_the_map) {
  GTEST_SKIP() << "Linux without sanitizers only (memory-heavy)";
}
TEST_F(posix_worker_memory, terminate_during_a_paced_map_fails_it_with_state_error) {
  GTEST_SKIP() << "Linux without sanitizers only (memory-heavy)";
}
#endif
