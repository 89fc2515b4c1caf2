// POSIX memory behaviour of large payloads: how many copies a round trip holds at its peak,
// and that large decoded vectors ask for huge pages (Linux).
#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

namespace mp = multiproc;

namespace {

using posix_memory = multiproc_test::checked;

std::size_t status_kib(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(status, line)) {
    if (line.rfind(prefix, 0) == 0) return std::stoul(line.substr(prefix.size()));
  }
  return 0;
}

std::vector<char> add_one_per_page(std::vector<char> v) {
  for (std::size_t i = 0; i < v.size(); i += 4096)
    v[i] = static_cast<char>(v[i] + 1);
  return v;
}

/// Runs in a fresh child (its own peak-memory mark): a 256 MiB argument and result through a
/// pool, then exits 0 if the peak stayed within the user's own copies plus one in transit.
void measure_quarter_gigabyte_round_trip(int method) {
  constexpr std::size_t size = 256u << 20;
  const std::size_t base_kib = status_kib("VmRSS");
  mp::pool pool(mp::pool_options{1, {}, 0, static_cast<mp::start_method>(method)});
  std::vector<char> big(size, 1);
  const auto back = pool.apply(add_one_per_page, big);
  const std::size_t peak_kib = status_kib("VmHWM");
  if (back.size() != size || back[0] != 2) std::exit(2);
  // big + back are the user's; the transport may add about one more copy at a time.
  const double copies = static_cast<double>(peak_kib - base_kib) * 1024.0 / size;
  std::printf("peak: %.2f copies of the payload\n", copies);
  std::fflush(stdout);
  std::exit(copies <= 3.3 ? 0 : 1);
}

TEST_F(posix_memory, large_payload_costs_about_one_copy_in_transit) {
#if defined(MULTIPROC_TEST_SANITIZED)
  GTEST_SKIP() << "a sanitizer's allocator changes what peak memory means";
#endif
  for (auto method : multiproc_test::pool_methods()) {
    mp::process p(mp::start_method::spawn, measure_quarter_gigabyte_round_trip,
                  static_cast<int>(method));
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), 0) << "the parent's peak memory exceeded its two copies plus one";
  }
}

#if defined(__linux__)
/// The VmFlags of the mapping that holds `address` (from /proc/self/smaps); "" if none does.
std::string vm_flags_at(const void* address) {
  const auto where = reinterpret_cast<std::uintptr_t>(address);
  std::ifstream smaps("/proc/self/smaps");
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long long from = 0, to = 0;
    char dash = 0;
    // A mapping's first line: "start-end perms offset dev inode path".
    if (std::sscanf(line.c_str(), "%llx%c%llx", &from, &dash, &to) == 3 && dash == '-') {
      inside = where >= from && where < to;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line + " ";
    }
  }
  return "";
}

/// In the worker: whether the decoded argument's storage asked for huge pages ("hg").
bool decoded_argument_asks_for_huge_pages(std::vector<char> payload) {
  return vm_flags_at(payload.data() + payload.size() / 2).find(" hg ") != std::string::npos;
}

std::vector<char> same_bytes(std::vector<char> payload) {
  return payload;
}

/// In a fresh process, whose heap has no range hinted before: exits 0 if a pool on `method`
/// decoded a 16 MiB argument (in its worker) and result (here) into storage that asked for huge
/// pages; 2 if the worker's did not, 3 if this process's did not, 4 if the result was wrong.
void check_decoded_storage(int method) {
  constexpr std::size_t size = std::size_t{16} << 20;
  int code = 0;
  {
    mp::pool pool(mp::pool_options{1, {}, 0, static_cast<mp::start_method>(method)});
    const std::vector<char> back = pool.apply(same_bytes, std::vector<char>(size, 2));
    if (back.size() != size || back[size - 1] != 2) {
      code = 4;
    } else if (vm_flags_at(back.data() + size / 2).find(" hg ") == std::string::npos) {
      code = 3;
    } else if (!pool.apply(decoded_argument_asks_for_huge_pages, std::vector<char>(size, 1))) {
      code = 2;
    }
  }
  std::exit(code);
}

// A large decoded vector (argument or result) is read into storage that asked for huge pages
// (include/multiproc/detail/archive.hpp, prepare_fresh_storage): 128 page faults for 256 MiB
// instead of 65 536.
TEST_F(posix_memory, large_decoded_vectors_ask_for_huge_pages) {
#if defined(MULTIPROC_TEST_POSIX_PORTABLE)
  GTEST_SKIP() << "the portable build asks for nothing: macOS has no such hint";
#endif
  {
    // Where the kernel has no transparent huge pages at all, the hint is refused: nothing to see.
    const std::size_t size = std::size_t{4} << 20;
    void* probe = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(probe, MAP_FAILED);
    const bool hinted = ::madvise(probe, size, MADV_HUGEPAGE) == 0;
    ::munmap(probe, size);
    if (!hinted) GTEST_SKIP() << "this kernel has no transparent huge pages";
  }
  for (auto method : multiproc_test::pool_methods()) {
    mp::process p(mp::start_method::spawn, check_decoded_storage, static_cast<int>(method));
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), 0) << "2: the worker's decoded argument did not ask; 3: the parent's "
                                  "decoded result did not; 4: the result came back wrong";
  }
}
#endif  // __linux__

}  // namespace
