// Conformance suite for mp::process: every test runs on every start method.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"
#include "targets.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;
using multiproc_test::point;

namespace {

void exit_with(int code) {
  std::exit(code);
}
void do_nothing() {}
void throw_runtime_error(std::string message) {
  throw std::runtime_error(message);
}
void throw_integer() {
  throw 42;
}
void call_abort() {
  std::abort();
}
void sleep_for_ms(int milliseconds) {
  std::this_thread::sleep_for(std::chrono::milliseconds(milliseconds));
}
void sleep_forever() {
  for (;;)
    std::this_thread::sleep_for(1h);
}

/// Exits 0 only if every argument arrived intact (each checked value gives a distinct code).
void check_arguments(std::string text, std::vector<int> numbers, std::map<std::string, int> table,
                     point p, std::optional<double> maybe, std::tuple<int, std::string> pair) {
  if (text != "hello, world") std::exit(10);
  if (numbers != std::vector<int>{1, 2, 3, 5, 8}) std::exit(11);
  if (table != std::map<std::string, int>{{"a", 1}, {"b", 2}}) std::exit(12);
  if (!(p == point{3, 4, "p"})) std::exit(13);
  if (maybe != 2.5) std::exit(14);
  if (pair != std::tuple<int, std::string>{7, "seven"}) std::exit(15);
  std::exit(0);
}

void write_marker_after_ms(std::string path, int milliseconds) {
  std::this_thread::sleep_for(std::chrono::milliseconds(milliseconds));
  std::ofstream(path) << "done\n";
}

void write_identity(std::string path) {
  std::ofstream out(path);
  out << mp::this_process::id() << ' ' << mp::this_process::parent_id() << '\n';
}

class process_conformance : public multiproc_test::method_test {
 protected:
  template <class F, class... Args>
  int run(F&& target, Args&&... args) {
    mp::process p(method(), std::forward<F>(target), std::forward<Args>(args)...);
    p.start();
    p.join();
    EXPECT_TRUE(p.exitcode().has_value());
    return p.exitcode().value_or(-1000);
  }
};

TEST_P(process_conformance, success_reads_zero) {
  EXPECT_EQ(run(do_nothing), 0);
}

TEST_P(process_conformance, exit_status_comes_back) {
  EXPECT_EQ(run(exit_with, 7), 7);
}

TEST_P(process_conformance, arguments_of_std_and_user_types_arrive) {
  EXPECT_EQ(run(check_arguments, std::string("hello, world"), std::vector<int>{1, 2, 3, 5, 8},
                std::map<std::string, int>{{"a", 1}, {"b", 2}}, point{3, 4, "p"},
                std::optional<double>(2.5), std::tuple<int, std::string>{7, "seven"}),
            0);
}

TEST_P(process_conformance, captureless_lambda_is_a_target) {
  EXPECT_EQ(run([](int code) { std::exit(code + 1); }, 4), 5);
}

TEST_P(process_conformance, converted_arguments) {
  // A const char* converts to the std::string parameter before it is sent.
  EXPECT_EQ(run([](std::string s) { std::exit(s == "abc" ? 0 : 1); }, "abc"), 0);
}

TEST_P(process_conformance, uncaught_exception_exits_one_and_prints_type_and_what) {
  ::testing::internal::CaptureStderr();
  const int code = run(throw_runtime_error, std::string("boom"));
  const std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, 1);
  EXPECT_NE(printed.find("std::runtime_error: boom"), std::string::npos) << printed;
}

TEST_P(process_conformance, non_standard_exception_exits_one) {
  ::testing::internal::CaptureStderr();
  const int code = run(throw_integer);
  const std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, 1);
#if defined(_MSC_VER)
  // No <cxxabi.h>: the library names only std::exception types; others read "unknown".
  EXPECT_NE(printed.find("unknown"), std::string::npos) << printed;
#else
  EXPECT_NE(printed.find("int"), std::string::npos) << printed;
#endif
}

TEST_P(process_conformance, abort_reads_as_sigabrt) {
  EXPECT_EQ(run(call_abort), multiproc_test::abort_exit_code());
}

TEST_P(process_conformance, terminate_reads_as_sigterm) {
  mp::process p(method(), sleep_forever);
  p.start();
  EXPECT_TRUE(p.is_alive());
  p.terminate();
  p.join();
  EXPECT_EQ(p.exitcode(), multiproc_test::sigterm_exit_code());
  EXPECT_FALSE(p.is_alive());
}

TEST_P(process_conformance, kill_reads_as_sigkill) {
  mp::process p(method(), sleep_forever);
  p.start();
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), multiproc_test::sigkill_exit_code());
}

TEST_P(process_conformance, join_with_timeout_on_a_sleeper_returns_false) {
  mp::process p(method(), sleep_forever);
  p.start();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(p.join(50ms));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);  // hang guard, not a benchmark
  EXPECT_FALSE(p.exitcode().has_value());
  EXPECT_TRUE(p.is_alive());
  p.kill();
  EXPECT_TRUE(p.join(30s));
  EXPECT_TRUE(p.exitcode().has_value());
}

TEST_P(process_conformance, join_with_a_timeout_beyond_any_clock_waits_for_the_end) {
  // Such timeouts overflow a naive conversion to nanoseconds or a deadline on the clock; they
  // must mean "wait", never "already timed out".
  for (int round = 0; round < 3; ++round) {
    mp::process p(method(), sleep_for_ms, 100);
    p.start();
    bool ended = false;
    if (round == 0) ended = p.join(std::chrono::seconds::max());
    if (round == 1) ended = p.join(std::chrono::hours(24 * 365 * 400));
    if (round == 2) ended = p.join(std::chrono::duration<double>(1e300));
    EXPECT_TRUE(ended) << "round " << round;
    EXPECT_EQ(p.exitcode(), 0) << "round " << round;
  }
  mp::process p(method(), sleep_forever);
  p.start();
  EXPECT_FALSE(p.join(std::chrono::seconds(-5)));  // negative: a poll, as zero
  EXPECT_FALSE(p.join(std::chrono::duration<double>(-1e300)));
  p.kill();
  p.join();
}

TEST_P(process_conformance, misuse_is_a_state_error) {
  mp::process p(method(), do_nothing);
  EXPECT_THROW(p.join(), mp::state_error);
  EXPECT_THROW(p.join(10ms), mp::state_error);
  EXPECT_THROW(p.terminate(), mp::state_error);
  EXPECT_THROW(p.kill(), mp::state_error);
  EXPECT_FALSE(p.exitcode().has_value());
  EXPECT_FALSE(p.pid().has_value());
  EXPECT_FALSE(p.is_alive());
  p.start();
  EXPECT_THROW(p.start(), mp::state_error);
  EXPECT_THROW(p.set_daemon(true), mp::state_error);
  p.join();
  EXPECT_THROW(p.start(), mp::state_error);
  EXPECT_NO_THROW(p.terminate());  // after the end: a no-op, as in Python
}

TEST_P(process_conformance, pid_and_parent_are_what_the_child_sees) {
  const std::string path = multiproc_test::temporary_path("identity");
  mp::process p(method(), write_identity, path);
  p.start();
  p.join();
  ASSERT_EQ(p.exitcode(), 0);
  std::ifstream in(path);
  long child = 0, parent = 0;
  in >> child >> parent;
  std::remove(path.c_str());
  EXPECT_EQ(child, p.pid().value());
  EXPECT_EQ(parent, mp::this_process::id());
  EXPECT_NE(child, mp::this_process::id());
}

TEST_P(process_conformance, names_default_and_can_be_set) {
  mp::process a(method(), do_nothing);
  mp::process b(method(), do_nothing);
  EXPECT_EQ(a.name().rfind("process-", 0), 0u);
  EXPECT_NE(a.name(), b.name());
  const int n = std::stoi(a.name().substr(8));
  EXPECT_EQ(b.name(), "process-" + std::to_string(n + 1));
  a.set_name("worker");
  EXPECT_EQ(a.name(), "worker");
  EXPECT_EQ(a.method(), method());
}

TEST_P(process_conformance, destructor_joins_a_running_child) {
  // The child ends on its own only after a while, leaving a marker: a destructor that
  // terminated it instead of joining would leave no marker.
  const std::string marker = multiproc_test::temporary_path("joined");
  long pid = 0;
  {
    mp::process p(method(), write_marker_after_ms, marker, 200);
    p.start();
    pid = p.pid().value();
  }
  std::string text;
  std::getline(std::ifstream(marker) >> std::ws, text);
  const bool finished = text == "done";
  std::remove(marker.c_str());
  EXPECT_TRUE(finished) << "the destructor did not let the child finish";
  EXPECT_FALSE(multiproc_test::process_running(pid));
}

TEST_P(process_conformance, destructor_terminates_a_daemon) {
  const auto before = multiproc_test::count_resources();
  long pid = 0;
  {
    mp::process p(method(), sleep_forever);
    p.set_daemon(true);
    EXPECT_TRUE(p.daemon());
    p.start();
    pid = p.pid().value();
  }
  EXPECT_FALSE(multiproc_test::process_running(pid));
  EXPECT_TRUE(multiproc_test::same_resources(before));
}

TEST_P(process_conformance, moved_process_keeps_its_child) {
  mp::process a(method(), exit_with, 3);
  a.start();
  mp::process b(std::move(a));
  b.join();
  EXPECT_EQ(b.exitcode(), 3);
}

TEST_P(process_conformance, thousand_starts_leave_nothing_behind) {
  const auto before = multiproc_test::count_resources();
  for (int i = 0; i < multiproc_test::volume(1000); ++i) {
    mp::process p(method(), exit_with, i % 3);
    p.start();
    p.join();
    ASSERT_EQ(p.exitcode(), i % 3);
  }
  EXPECT_TRUE(multiproc_test::same_resources(before));
}

TEST_P(process_conformance, missing_executable_is_a_start_error) {
  if (method() != mp::start_method::spawn) GTEST_SKIP() << "only spawn runs an executable";
  const auto before = multiproc_test::count_resources();
  mp::set_executable(multiproc_test::temporary_path("does-not-exist"));
  mp::process p(method(), do_nothing);
  try {
    p.start();
    ADD_FAILURE() << "start() should have thrown";
  } catch (const mp::start_error& e) {
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory) << e.what();
  }
  mp::set_executable("");
  EXPECT_TRUE(multiproc_test::same_resources(before));
}

INSTANTIATE_TEST_SUITE_P(methods, process_conformance,
                         ::testing::ValuesIn(multiproc_test::available_methods()),
                         multiproc_test::method_name);

using start_methods = multiproc_test::checked;
using this_process = multiproc_test::checked;

TEST_F(start_methods, default_is_available_and_spawn_always_is) {
  EXPECT_TRUE(mp::start_method_available(mp::default_start_method()));
  EXPECT_TRUE(mp::start_method_available(mp::start_method::spawn));
  EXPECT_TRUE(mp::start_method_available(mp::start_method::automatic));
  EXPECT_EQ(mp::start_method_available(mp::start_method::fork), MULTIPROC_HAS_FORK == 1);
#if defined(MULTIPROC_TEST_EXPECT_DEFAULT_SPAWN)
  EXPECT_EQ(mp::default_start_method(), mp::start_method::spawn);
#elif defined(MULTIPROC_TEST_EXPECT_DEFAULT_FORK)
  EXPECT_EQ(mp::default_start_method(), mp::start_method::fork);
#elif defined(MULTIPROC_TEST_EXPECT_DEFAULT_FORKSERVER)
  EXPECT_EQ(mp::default_start_method(), mp::start_method::forkserver);
#elif MULTIPROC_HAS_FORK
  EXPECT_EQ(mp::default_start_method(), mp::start_method::automatic);
#else
  EXPECT_EQ(mp::default_start_method(), mp::start_method::spawn);
#endif
}

TEST_F(start_methods, an_unavailable_method_is_a_start_error_naming_it) {
  for (auto m : {mp::start_method::fork, mp::start_method::forkserver}) {
    if (mp::start_method_available(m)) continue;
    try {
      mp::process p(m, [] {});
      ADD_FAILURE() << "an unavailable start method was accepted";
    } catch (const mp::start_error& e) {
      EXPECT_EQ(e.code(), std::errc::function_not_supported) << e.what();
      EXPECT_NE(std::string(e.what()).find(m == mp::start_method::fork ? "fork" : "forkserver"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST_F(start_methods, automatic_resolves_to_a_method_a_start_can_use) {
  const mp::start_method chosen = mp::resolve_start_method(mp::start_method::automatic);
  EXPECT_NE(chosen, mp::start_method::automatic);
  EXPECT_TRUE(mp::start_method_available(chosen));
  for (auto m : {mp::start_method::fork, mp::start_method::spawn, mp::start_method::forkserver})
    EXPECT_EQ(mp::resolve_start_method(m), m);
#if !MULTIPROC_HAS_FORK
  EXPECT_EQ(chosen, mp::start_method::spawn);
#endif
  // A started process tells the method it was started with, never automatic.
  mp::process p(mp::start_method::automatic, [] {});
  EXPECT_EQ(p.method(), mp::start_method::automatic);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_NE(p.method(), mp::start_method::automatic);
  EXPECT_TRUE(mp::start_method_available(p.method()));
}

TEST_F(this_process, ids_and_cpu_count) {
  EXPECT_GT(mp::this_process::id(), 0);
  EXPECT_GT(mp::this_process::parent_id(), 0);
  EXPECT_NE(mp::this_process::id(), mp::this_process::parent_id());
  EXPECT_GE(mp::cpu_count(), 1u);
}

}  // namespace
