// What mp::progress prints: a bar redrawn in place when stderr is a terminal (a
// pseudo-terminal here, posix_openpt), a line every 10 % when it is a pipe. POSIX only: the
// terminal is a pseudo-terminal.
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <iterator>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <multiproc/multiproc.hpp>

#include "support.hpp"

namespace mp = multiproc;

namespace {

int square(int x) {
  return x * x;
}

constexpr int terminal_columns = 100;
constexpr const char* end_marker = "<end of test output>";

/// Points this process's stderr (descriptor 2) at `target` while it lives.
class stderr_redirected {
 public:
  explicit stderr_redirected(int target) : saved_(::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3)) {
    std::fflush(stderr);
    ::dup2(target, STDERR_FILENO);
  }
  ~stderr_redirected() {
    std::fflush(stderr);
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
  }
  stderr_redirected(const stderr_redirected&) = delete;
  stderr_redirected& operator=(const stderr_redirected&) = delete;

 private:
  int saved_;
};

/// Runs `body` with stderr on a pipe; returns what it wrote there.
template <class Body>
std::string stderr_through_a_pipe(Body body) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  {
    const stderr_redirected redirected(fds[1]);
    body();
  }
  ::close(fds[1]);
  std::string out;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;)
    out.append(buffer, static_cast<std::size_t>(n));
  ::close(fds[0]);
  return out;
}

/// Runs `body` with stderr on a pseudo-terminal of terminal_columns columns, in raw mode (the
/// bytes arrive as written); returns what it wrote there. A thread reads the other side as it
/// goes, so a full terminal buffer never blocks the writer.
template <class Body>
std::string stderr_on_a_terminal(Body body) {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  EXPECT_GE(master, 0);
  EXPECT_EQ(::grantpt(master), 0);
  EXPECT_EQ(::unlockpt(master), 0);
  const int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  EXPECT_GE(slave, 0);
  termios mode{};
  ::tcgetattr(slave, &mode);
  ::cfmakeraw(&mode);
  ::tcsetattr(slave, TCSANOW, &mode);
  winsize size{};
  size.ws_row = 24;
  size.ws_col = terminal_columns;
  ::ioctl(slave, TIOCSWINSZ, &size);

  std::string out;
  std::thread reader([&] {
    char buffer[4096];
    while (out.find(end_marker) == std::string::npos) {
      pollfd p{master, POLLIN, 0};
      // A hang guard only: the marker is written right after the body.
      if (::poll(&p, 1, 120000) != 1) break;
      const ssize_t n = ::read(master, buffer, sizeof buffer);
      if (n <= 0) break;
      out.append(buffer, static_cast<std::size_t>(n));
    }
  });
  {
    const stderr_redirected redirected(slave);
    body();
  }
  EXPECT_EQ(::write(slave, end_marker, std::char_traits<char>::length(end_marker)),
            static_cast<ssize_t>(std::char_traits<char>::length(end_marker)));
  reader.join();
  ::close(slave);
  ::close(master);
  const auto at = out.find(end_marker);
  EXPECT_NE(at, std::string::npos) << "the terminal's output never ended: " << out;
  return out.substr(0, at);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (std::size_t at; (at = text.find('\n', start)) != std::string::npos; start = at + 1)
    lines.push_back(text.substr(start, at - start));
  EXPECT_EQ(start, text.size()) << "the output does not end its last line";
  return lines;
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

std::vector<int> numbers(int count) {
  std::vector<int> xs(static_cast<std::size_t>(count));
  std::iota(xs.begin(), xs.end(), 0);
  return xs;
}

/// An input range that cannot tell its length: progress shows counts without a total.
struct unsized_count {
  int limit;
  struct iterator {
    int value;
    int limit;
    using value_type = int;
    using difference_type = std::ptrdiff_t;
    int operator*() const { return value; }
    iterator& operator++() {
      ++value;
      return *this;
    }
    void operator++(int) { ++value; }
    bool operator==(std::default_sentinel_t) const { return value == limit; }
  };
  iterator begin() const { return {0, limit}; }
  std::default_sentinel_t end() const { return {}; }
};

class progress_output : public multiproc_test::checked {
 protected:
  // Each test starts its pool before it redirects stderr: the workers keep the test's own
  // stderr, and hold no copy of the pipe (whose end of file the pipe tests wait for).
  static mp::pool make_pool() {
    return mp::pool(mp::pool_options{2, {}, 0, multiproc_test::pool_methods().front()});
  }
  const mp::progress_options squares{.description = "squares"};
};

TEST_F(progress_output, a_pipe_gets_a_line_every_ten_percent) {
  mp::pool pool = make_pool();
  long sum = 0;
  const std::string out = stderr_through_a_pipe([&] {
    for (int v : mp::progress(pool.imap(square, numbers(50)), squares))
      sum += v;
  });
  EXPECT_EQ(sum, 40425);
  EXPECT_EQ(out.find('\r'), std::string::npos) << out;
  const auto lines = lines_of(out);
  ASSERT_EQ(lines.size(), 10u) << out;
  for (int step = 1; step <= 10; ++step) {
    const std::string expected =
        "squares: " + std::to_string(step * 10) + "% " + std::to_string(step * 5) + "/50 [";
    EXPECT_TRUE(starts_with(lines[static_cast<std::size_t>(step - 1)], expected))
        << "expected " << expected << ", got " << lines[static_cast<std::size_t>(step - 1)];
  }
  EXPECT_NE(lines.back().find("<00:00, "), std::string::npos) << lines.back();
  EXPECT_NE(lines.back().find(" items/s]"), std::string::npos) << lines.back();
}

TEST_F(progress_output, a_terminal_gets_one_bar_redrawn_in_place) {
  mp::pool pool = make_pool();
  long sum = 0;
  const std::string out = stderr_on_a_terminal([&] {
    for (int v : mp::progress(pool.imap(square, numbers(50)), squares))
      sum += v;
  });
  EXPECT_EQ(sum, 40425);
  ASSERT_FALSE(out.empty());
  EXPECT_TRUE(starts_with(out, "\rsquares:   0%|")) << out;
  // One line in all: every redraw goes back to its start, and only the end ends it.
  EXPECT_EQ(out.find('\n'), out.size() - 1) << out;
  const std::string last = out.substr(out.rfind('\r') + 1);
  const std::string full_bar(40, '#');
  EXPECT_TRUE(starts_with(last, "squares: 100%|" + full_bar + "| 50/50 [")) << last;
  EXPECT_NE(last.find("<00:00, "), std::string::npos) << last;
  // No redraw is wider than the terminal (which would wrap it onto a second line).
  std::size_t start = 0;
  for (std::size_t at; (at = out.find('\r', start + 1)) != std::string::npos; start = at)
    EXPECT_LT(at - start - 1, static_cast<std::size_t>(terminal_columns));
}

TEST_F(progress_output, leaving_the_loop_early_ends_the_report_cleanly) {
  mp::pool pool = make_pool();
  const std::string after_break = stderr_through_a_pipe([&] {
    int seen = 0;
    for (int v : mp::progress(pool.imap(square, numbers(50)), squares)) {
      (void)v;
      if (++seen == 20) break;  // items count once the body is done with them: 19 do
    }
  });
  auto lines = lines_of(after_break);
  ASSERT_EQ(lines.size(), 4u) << after_break;
  EXPECT_TRUE(starts_with(lines[2], "squares: 30% 15/50 [")) << lines[2];
  EXPECT_TRUE(starts_with(lines[3], "squares: stopped at 38% 19/50 [")) << lines[3];

  const std::string after_throw = stderr_through_a_pipe([&] {
    try {
      int seen = 0;
      for (int v : mp::progress(pool.imap(square, numbers(50)), squares)) {
        (void)v;
        if (++seen == 10) throw std::runtime_error("the loop body failed");
      }
    } catch (const std::runtime_error&) {
    }
  });
  lines = lines_of(after_throw);
  ASSERT_EQ(lines.size(), 2u) << after_throw;
  EXPECT_TRUE(starts_with(lines[1], "squares: stopped at 18% 9/50 [")) << lines[1];

  const std::string on_terminal = stderr_on_a_terminal([&] {
    int seen = 0;
    for (int v : mp::progress(pool.imap(square, numbers(50)), squares)) {
      (void)v;
      if (++seen == 20) break;
    }
  });
  ASSERT_FALSE(on_terminal.empty());
  EXPECT_EQ(on_terminal.back(), '\n') << on_terminal;
  const std::string last = on_terminal.substr(on_terminal.rfind('\r') + 1);
  EXPECT_TRUE(starts_with(last, "squares:  38%|")) << last;
  EXPECT_NE(last.find("| 19/50 ["), std::string::npos) << last;
}

TEST_F(progress_output, a_map_async_result_reports_its_chunks) {
  mp::pool pool = make_pool();
  std::vector<int> result;
  const std::string out = stderr_through_a_pipe(
      [&] { result = mp::progress(pool.map_async(square, numbers(100), 10), squares).get(); });
  EXPECT_EQ(result.size(), 100u);
  const auto lines = lines_of(out);
  ASSERT_FALSE(lines.empty());
  ASSERT_LE(lines.size(), 10u) << out;
  int previous = 0;
  for (const auto& line : lines) {
    // Chunks of 10 items: each line is at a multiple of 10 %, higher than the one before.
    ASSERT_TRUE(starts_with(line, "squares: ")) << line;
    const int percent = std::stoi(line.substr(9));
    EXPECT_EQ(percent % 10, 0) << line;
    EXPECT_GT(percent, previous) << out;
    EXPECT_NE(line.find("% " + std::to_string(percent) + "/100 ["), std::string::npos) << line;
    previous = percent;
  }
  EXPECT_EQ(previous, 100) << out;

  const std::string bar = stderr_on_a_terminal(
      [&] { result = mp::progress(pool.map_async(square, numbers(100), 10), squares).get(); });
  ASSERT_FALSE(bar.empty());
  EXPECT_EQ(bar.find('\n'), bar.size() - 1) << bar;
  const std::string last = bar.substr(bar.rfind('\r') + 1);
  EXPECT_TRUE(starts_with(last, "squares: 100%|" + std::string(40, '#') + "| 100/100 [")) << last;
}

TEST_F(progress_output, without_a_total_lines_come_at_powers_of_ten) {
  mp::pool pool = make_pool();
  const std::string out = stderr_through_a_pipe([&] {
    long sum = 0;
    for (int v : mp::progress(pool.imap(square, unsized_count{50}), squares))
      sum += v;
    EXPECT_EQ(sum, 40425);
  });
  const auto lines = lines_of(out);
  ASSERT_EQ(lines.size(), 3u) << out;
  EXPECT_TRUE(starts_with(lines[0], "squares: 1 item [")) << lines[0];
  EXPECT_TRUE(starts_with(lines[1], "squares: 10 items [")) << lines[1];
  EXPECT_TRUE(starts_with(lines[2], "squares: 50 items [")) << lines[2];

  // A total given by the caller stands in for the one the range cannot tell.
  const std::string with_total = stderr_through_a_pipe([&] {
    for (int v : mp::progress(pool.imap(square, unsized_count{50}),
                              {.description = "squares", .total = 50}))
      (void)v;
  });
  EXPECT_TRUE(starts_with(lines_of(with_total).back(), "squares: 100% 50/50 [")) << with_total;
}

TEST_F(progress_output, disabled_it_prints_nothing) {
  mp::pool pool = make_pool();
  const mp::progress_options off{.description = "squares", .enabled = false};
  const std::string piped = stderr_through_a_pipe([&] {
    for (int v : mp::progress(pool.imap(square, numbers(50)), off))
      (void)v;
    (void)mp::progress(pool.map_async(square, numbers(50)), off).get();
  });
  EXPECT_EQ(piped, "");
  const std::string on_terminal = stderr_on_a_terminal([&] {
    for (int v : mp::progress(pool.imap(square, numbers(50)), off))
      (void)v;
  });
  EXPECT_EQ(on_terminal, "");
}

}  // namespace
