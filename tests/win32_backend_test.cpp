// Tests of what only the Windows backend does: the seam's Win32 calls directly, and the
// Windows conventions through the public API (exit codes, inheritance, UTF-16 paths).
#if defined(_WIN32)

// The backend's own Windows preamble (<windows.h> as it uses it) and the seam.
#include "../src/os/channel.hpp"
#include "../src/os/child.hpp"
#include "../src/os/code_identity.hpp"
#include "../src/os/shared_block.hpp"
#include "../src/os/spawn.hpp"
#include "../src/os/system.hpp"
#include "../src/win32/internal.hpp"

#include <stdlib.h>  // _putenv_s

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

namespace mp = multiproc;
namespace os = multiproc::detail::os;
using namespace std::chrono_literals;

namespace {

int triple(int x) {
  return 3 * x;
}

void sleep_long() {
  Sleep(60000);
}

void sleep_briefly() {
  Sleep(300);
}

void raise_access_violation() {
  // The same end as a null pointer write, without undefined behaviour in the test.
  RaiseException(static_cast<DWORD>(EXCEPTION_ACCESS_VIOLATION), EXCEPTION_NONCONTINUABLE, 0,
                 nullptr);
}

void do_nothing() {}

// A child object for this very process, so shared blocks can be exported and opened without
// a second process.
os::child child_for_self() {
  HANDLE self = nullptr;
  EXPECT_TRUE(DuplicateHandle(GetCurrentProcess(), GetCurrentProcess(), GetCurrentProcess(), &self,
                              0, FALSE, DUPLICATE_SAME_ACCESS));
  return os::child(static_cast<long>(GetCurrentProcessId()),
                   reinterpret_cast<os::native_handle>(self));
}

std::wstring temp_directory() {
  wchar_t buffer[MAX_PATH + 1];
  const DWORD length = GetTempPathW(MAX_PATH + 1, buffer);
  return std::wstring(buffer, length);
}

}  // namespace

using win32_adopt = multiproc_test::checked;
using win32_channel = multiproc_test::checked;
using win32_code_identity = multiproc_test::checked;
using win32_process = multiproc_test::checked;
using win32_shared_block = multiproc_test::checked;
using win32_system = multiproc_test::checked;

TEST_F(win32_channel, end_of_stream_and_broken_pipe) {
  auto [parent, child] = os::make_channel_pair();
  child.write_all("ab", 2);
  child.close_write();
  char buffer[4];
  ASSERT_EQ(parent.read_some(buffer, sizeof buffer), 2U);
  EXPECT_EQ(parent.read_some(buffer, sizeof buffer), 0U);

  child.close();
  try {
    parent.write_all("x", 1);
    FAIL() << "writing to a pipe without a reader succeeded";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::broken_pipe);
  }
}

TEST_F(win32_channel, large_writes_arrive_whole) {
  auto [parent, child] = os::make_channel_pair();
  const std::string sent(8 << 20, 'q');
  std::thread writer([&] {
    child.write_all(sent.data(), sent.size());
    child.close_write();
  });
  std::string received;
  char buffer[65536];
  for (std::size_t n; (n = parent.read_some(buffer, sizeof buffer)) != 0;)
    received.append(buffer, n);
  writer.join();
  EXPECT_EQ(received.size(), sent.size());
  EXPECT_EQ(received, sent);
}

TEST_F(win32_channel, write_capacity_is_taken_without_a_reader) {
  // The pool sizes what it leaves in a worker's pipe by this figure: a write of that many
  // bytes must complete while the worker reads nothing, or the parent could wait on a worker
  // that waits on it.
  auto [parent, child] = os::make_channel_pair();
  const std::size_t capacity = parent.write_capacity();
  EXPECT_GE(capacity, 4096U);
  EXPECT_LE(capacity, std::size_t{1} << 20);
  const std::string sent(capacity, 'c');
  std::promise<void> written;
  std::thread writer([&] {
    parent.write_all(sent.data(), sent.size());
    written.set_value();
  });
  const bool completed =
      written.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  EXPECT_TRUE(completed) << "a write of write_capacity() bytes waited for the reader";
  std::string received;
  std::vector<char> buffer(65536);
  while (received.size() < sent.size()) {
    const std::size_t n = child.read_some(buffer.data(), buffer.size());
    if (n == 0) break;  // cannot happen while the writer holds its end; the check below fails
    received.append(buffer.data(), n);
  }
  writer.join();
  EXPECT_EQ(received, sent);
}

TEST_F(win32_channel, handles_are_not_inheritable) {
  auto [parent, child] = os::make_channel_pair();
  for (os::native_handle h :
       {parent.read_handle(), parent.write_handle(), child.read_handle(), child.write_handle()}) {
    DWORD flags = 0;
    ASSERT_TRUE(GetHandleInformation(reinterpret_cast<HANDLE>(h), &flags));
    EXPECT_EQ(flags & HANDLE_FLAG_INHERIT, 0U);
  }
}

TEST_F(win32_shared_block, create_grow_export_open) {
  ASSERT_TRUE(os::shared_block::supported());
  os::shared_block block = os::shared_block::create(1 << 20);
  ASSERT_TRUE(block);
  EXPECT_EQ(block.data()[12345], 0);
  std::memcpy(block.data(), "payload", 7);
  block.grow(3 << 20);
  ASSERT_EQ(block.size(), std::size_t{3} << 20);
  EXPECT_EQ(std::memcmp(block.data(), "payload", 7), 0);
  EXPECT_EQ(block.data()[(3 << 20) - 1], 0);

  os::child self = child_for_self();
  std::vector<os::native_handle> attached;  // stays empty: Windows duplicates handles
  os::channel none;
  os::shared_block received =
      os::shared_block::open_from_parent(block.export_to_child(self, attached), block.size(), none);
  EXPECT_EQ(std::memcmp(received.data(), "payload", 7), 0);
  received.data()[0] = 'P';  // the same memory, not a copy
  EXPECT_EQ(block.data()[0], 'P');

  os::shared_block back =
      os::shared_block::open_from_child(self, block.export_to_parent(attached), block.size(), none);
  EXPECT_EQ(back.data()[0], 'P');
  EXPECT_THROW(
      os::shared_block::open_from_child(self, block.export_to_parent(attached), 64U << 20, none),
      std::system_error);  // larger than the section
  EXPECT_TRUE(attached.empty());
}

TEST_F(win32_code_identity, main_program_and_system_modules) {
  os::code_location where;
  ASSERT_TRUE(os::locate_code(reinterpret_cast<const void*>(&triple), where));
  EXPECT_EQ(where.module, "");
  EXPECT_EQ(os::resolve_code(where.module, where.offset), reinterpret_cast<const void*>(&triple));
  EXPECT_EQ(os::resolve_code("", 0), nullptr);  // the PE header: not executable
  EXPECT_EQ(os::resolve_code("", std::uint64_t{1} << 40), nullptr);

  const void* system_function = reinterpret_cast<const void*>(
      GetProcAddress(GetModuleHandleW(L"kernel32.dll"), "GetCurrentProcessId"));
  ASSERT_TRUE(os::locate_code(system_function, where));
  EXPECT_NE(where.module, "");
  EXPECT_EQ(os::resolve_code(where.module, where.offset), system_function);
  EXPECT_EQ(os::resolve_code("C:\\no such directory\\no such module.dll", 0x1000), nullptr);

  int on_the_stack = 0;
  EXPECT_FALSE(os::locate_code(&on_the_stack, where));
  EXPECT_FALSE(os::image_identity().empty());
  EXPECT_EQ(os::image_identity(), os::image_identity());
}

TEST_F(win32_system, environment_random_and_ids) {
  ASSERT_EQ(_putenv_s("MULTIPROC_WIN32_TEST_VARIABLE", "1"), 0);
  ASSERT_TRUE(SetEnvironmentVariableW(L"MULTIPROC_WIN32_TEST_VARIABLE", L"1"));
  os::unset_environment("MULTIPROC_WIN32_TEST_VARIABLE");
  EXPECT_EQ(std::getenv("MULTIPROC_WIN32_TEST_VARIABLE"), nullptr);
  wchar_t value[8];
  EXPECT_EQ(GetEnvironmentVariableW(L"MULTIPROC_WIN32_TEST_VARIABLE", value, 8), 0U);

  unsigned char a[32] = {}, b[32] = {};
  os::random_bytes(a, sizeof a);
  os::random_bytes(b, sizeof b);
  EXPECT_NE(std::memcmp(a, b, sizeof a), 0);

  EXPECT_EQ(os::current_pid(), static_cast<long>(GetCurrentProcessId()));
  EXPECT_GE(os::hardware_cpu_count(), 1U);
}

TEST_F(win32_adopt, refuses_tokens_that_name_no_pipe) {
  EXPECT_FALSE(os::adopt_inherited_channel("").is_open());
  EXPECT_FALSE(os::adopt_inherited_channel("12,abc").is_open());
  EXPECT_FALSE(os::adopt_inherited_channel("1,2,x").is_open());
  HANDLE event = CreateEventW(nullptr, TRUE, FALSE, nullptr);
  const std::string token = std::to_string(reinterpret_cast<std::intptr_t>(event));
  EXPECT_FALSE(os::adopt_inherited_channel(token + "," + token).is_open());
  CloseHandle(event);
}

TEST_F(win32_process, terminate_and_kill_read_back_as_signals) {
  mp::process terminated(sleep_long);
  terminated.start();
  terminated.terminate();
  terminated.join();
  EXPECT_EQ(terminated.exitcode(), -15);

  mp::process killed(sleep_long);
  killed.start();
  killed.kill();
  killed.join();
  EXPECT_EQ(killed.exitcode(), -9);
}

TEST_F(win32_process, crash_reads_as_ntstatus) {
  mp::process crashing(raise_access_violation);
  crashing.start();
  crashing.join();
  EXPECT_EQ(crashing.exitcode(), static_cast<int>(0xC0000005U));
}

TEST_F(win32_process, child_inherits_no_other_handle) {
  // An inheritable pipe this process holds must not reach the child: if it did, the child
  // would keep the write end open and the read end would not report a broken pipe.
  SECURITY_ATTRIBUTES inheritable{sizeof inheritable, nullptr, TRUE};
  HANDLE read_end = nullptr, write_end = nullptr;
  ASSERT_TRUE(CreatePipe(&read_end, &write_end, &inheritable, 0));
  mp::process p(sleep_briefly);
  p.start();
  CloseHandle(write_end);
  DWORD available = 0;
  const BOOL peeked = PeekNamedPipe(read_end, nullptr, 0, nullptr, &available, nullptr);
  const DWORD error = GetLastError();
  EXPECT_TRUE(p.is_alive());
  p.join();
  CloseHandle(read_end);
  EXPECT_FALSE(peeked);
  EXPECT_EQ(error, static_cast<DWORD>(ERROR_BROKEN_PIPE));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_F(win32_process, program_path_with_spaces_and_non_ascii) {
  wchar_t self[32768];
  const DWORD length = GetModuleFileNameW(nullptr, self, 32768);
  ASSERT_GT(length, 0U);
  const std::wstring directory = temp_directory() + L"multiproc test \u00e9\u4e2d";
  CreateDirectoryW(directory.c_str(), nullptr);
  const std::wstring copy = directory + L"\\copy \u00fc \u03bb.exe";
  ASSERT_TRUE(CopyFileW(self, copy.c_str(), FALSE)) << GetLastError();

  mp::set_executable(os::utf16_to_utf8(copy));
  mp::process p(do_nothing);
  p.start();
  p.join();
  mp::set_executable("");
  EXPECT_EQ(p.exitcode(), 0);

  for (int attempt = 0; attempt < 50 && !DeleteFileW(copy.c_str()); ++attempt)
    Sleep(20);
  RemoveDirectoryW(directory.c_str());
}

#endif  // _WIN32
