// A long map with a progress bar (what Python programs get from tqdm), then the
// concurrent.futures idioms: as_completed over results of two pools, wait for the first,
// cancel what has not started. On a terminal the bar is redrawn in place; through a pipe or
// into a log it prints a line every 10 %. --quiet turns the bar off.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

/// Pretends to work for a few milliseconds (5 to 23, depending on x), then returns its square.
int slow_square(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(5 + x % 7 * 3));
  return x * x;
}

/// Pretends to work for `ms` milliseconds, then returns `x`.
int after(int x, int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return x;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const bool quiet = argc > 1 && std::strcmp(argv[1], "--quiet") == 0;
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // its lines and the bars (stderr) in order

  mp::pool pool(4);
  std::vector<int> xs(300);
  for (int i = 0; i < 300; ++i)
    xs[static_cast<std::size_t>(i)] = i;

  // A lazy imap: the bar moves as the loop takes each item.
  long sum = 0;
  for (int y : mp::progress(pool.imap(slow_square, xs), {.description = "imap", .enabled = !quiet}))
    sum += y;
  std::printf("imap: sum of squares %ld\n", sum);

  // A map_async result tells items_done() / items_total(); progress() waits for it, drawing.
  auto squares = pool.map_async(slow_square, xs, 10);
  const std::vector<int> ys =
      mp::progress(squares, {.description = "map_async", .enabled = !quiet}).get();
  std::printf("map_async: %zu of %zu items, last %d\n", squares.items_done(), squares.items_total(),
              ys.back());

  // Results of two pools, as they complete: the shortest task comes first.
  mp::pool other(2);
  std::vector<mp::async_result<int>> results{pool.apply_async(after, 0, 300),
                                             other.apply_async(after, 1, 150),
                                             other.apply_async(after, 2, 10)};
  const auto [done, not_done] = mp::wait(results, mp::return_when::first_completed);
  std::printf("wait(first_completed): %zu done, %zu not yet\n", done.size(), not_done.size());
  for (std::size_t i : mp::as_completed(results))
    std::printf("as_completed: result %zu = %d\n", i, results[i].get());

  // Cancel what has not started: close(mp::cancel_pending) is shutdown(cancel_futures=True).
  std::vector<mp::async_result<int>> backlog;
  for (int i = 0; i < 1000; ++i)
    backlog.push_back(other.apply_async(after, i, 50));
  const std::size_t cancelled = other.close(mp::cancel_pending);
  other.join();
  std::printf("close(cancel_pending): %zu of %zu tasks cancelled\n", cancelled, backlog.size());
  try {
    backlog.back().get();
  } catch (const mp::cancelled_error& e) {
    std::printf("the last one: cancelled_error: %s\n", e.what());
  }
  return 0;
}
