// The program's own output, as a user sees it in a file: children the library starts never
// write bytes their parent had buffered (stdio or std::cout), so a program that prints N lines
// while it starts processes leaves exactly N well-formed lines. On every start method: fork is
// where it could go wrong; spawn is the control. And in order: what the parent printed before
// it started a child comes before the child's own lines, on every method (as in Python, which
// flushes the parent's streams before any start).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

namespace mp = multiproc;

namespace {

constexpr int lines_to_print = 20000;

enum class writer : int {
  c_stdio = 0,     ///< printf into stdout's buffer
  cpp_stream = 1,  ///< std::cout with its own buffer (sync_with_stdio(false))
};

enum class starter : int {
  pool_rotating_workers = 0,    ///< pool(2), maxtasksperchild = 1, 200 tasks
  processes_from_a_thread = 1,  ///< 60 mp::process started and joined by a second thread
};

int nothing(int x) {
  return x;
}
void nothing_at_all() {}

/// One line, recognisable and checkable: its number and a fixed tail long enough that the
/// buffer is usually mid-line when another thread forks.
std::string line_text(int number) {
  return "line " + std::to_string(number) + " abcdefghijklmnopqrstuvwxyz0123456789";
}

void print_lines(writer how) {
  for (int i = 0; i < lines_to_print; ++i) {
    if (how == writer::c_stdio) {
      std::printf("%s\n", line_text(i).c_str());
    } else {
      std::cout << line_text(i) << '\n';
    }
  }
}

/// The user's program, run as a child of the test with its stdout sent to `path`: prints its
/// lines from the main thread while children are started as `how_started` says.
void print_while_starting_children(std::string path, int how_printed, int how_started,
                                   mp::start_method method) {
  if (std::freopen(path.c_str(), "w", stdout) == nullptr) std::exit(20);
  const auto how = static_cast<writer>(how_printed);
  if (how == writer::cpp_stream) std::ios::sync_with_stdio(false);
  if (static_cast<starter>(how_started) == starter::pool_rotating_workers) {
    mp::pool pool(mp::pool_options{2, {}, 1, method});
    std::vector<int> items(200);
    auto all = pool.map_async(nothing, items, 1);
    print_lines(how);
    all.get();
    pool.close();
    pool.join();
  } else {
    std::thread starter_thread([method] {
      for (int i = 0; i < 60; ++i) {
        mp::process p(method, nothing_at_all);
        p.start();
        p.join();
      }
    });
    print_lines(how);
    starter_thread.join();
  }
  std::cout.flush();
  std::fflush(stdout);
}

/// Exactly lines_to_print lines, each well-formed, each number once.
::testing::AssertionResult exactly_the_printed_lines(const std::string& path) {
  std::ifstream in(path);
  std::set<int> seen;
  int total = 0;
  int malformed = 0;
  std::string first_bad;
  for (std::string line; std::getline(in, line);) {
    ++total;
    int number = -1;
    char rest[64] = {};
    if (std::sscanf(line.c_str(), "line %d %63s", &number, rest) != 2 || number < 0 ||
        number >= lines_to_print || line != line_text(number)) {
      if (malformed++ == 0) first_bad = line;
      continue;
    }
    seen.insert(number);
  }
  if (total == lines_to_print && malformed == 0 && seen.size() == lines_to_print) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << total << " lines (" << lines_to_print << " printed), " << malformed
         << " malformed (first: \"" << first_bad << "\"), " << seen.size() << " distinct";
}

void print_child_line(int how_printed) {
  if (static_cast<writer>(how_printed) == writer::c_stdio) {
    std::printf("child\n");
  } else {
    std::cout << "child\n";
  }
}

/// The user's program, stdout sent to `path` (so fully buffered): a line, a child that prints
/// its own, another line.
void print_around_a_child(std::string path, int how_printed, mp::start_method method) {
  if (std::freopen(path.c_str(), "w", stdout) == nullptr) std::exit(20);
  const bool stdio = static_cast<writer>(how_printed) == writer::c_stdio;
  if (stdio) {
    std::printf("before\n");
  } else {
    std::cout << "before\n";
  }
  mp::process child(method, print_child_line, how_printed);
  child.start();
  child.join();
  if (stdio) {
    std::printf("after\n");
  } else {
    std::cout << "after\n";
  }
  std::fflush(stdout);
  std::exit(child.exitcode() == 0 ? 0 : 21);
}

class program_output : public multiproc_test::method_test {
 protected:
  void run_program(writer how, starter start) {
    const std::string path = multiproc_test::temporary_path("stdout.txt");
    mp::process program(method(), print_while_starting_children, path, static_cast<int>(how),
                        static_cast<int>(start), method());
    program.start();
    program.join();
    EXPECT_EQ(program.exitcode(), 0);
    EXPECT_TRUE(exactly_the_printed_lines(path));
    std::remove(path.c_str());
  }
};

TEST_P(program_output, stdio_lines_while_a_pool_rotates_its_workers) {
  run_program(writer::c_stdio, starter::pool_rotating_workers);
}
TEST_P(program_output, stream_lines_while_a_pool_rotates_its_workers) {
  run_program(writer::cpp_stream, starter::pool_rotating_workers);
}
TEST_P(program_output, stdio_lines_while_another_thread_starts_processes) {
  run_program(writer::c_stdio, starter::processes_from_a_thread);
}
TEST_P(program_output, stream_lines_while_another_thread_starts_processes) {
  run_program(writer::cpp_stream, starter::processes_from_a_thread);
}

TEST_P(program_output, a_childs_lines_come_after_what_its_parent_printed_before_it) {
  for (writer how : {writer::c_stdio, writer::cpp_stream}) {
    const std::string path = multiproc_test::temporary_path("order.txt");
    mp::process program(method(), print_around_a_child, path, static_cast<int>(how), method());
    program.start();
    ASSERT_TRUE(program.join(std::chrono::seconds(60)));
    EXPECT_EQ(program.exitcode(), 0);
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text, "before\nchild\nafter\n") << "printed with " << static_cast<int>(how);
    std::remove(path.c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(methods, program_output,
                         ::testing::ValuesIn(multiproc_test::pool_methods()),
                         multiproc_test::method_name);

}  // namespace
