// mp::progress (include/multiproc/progress.hpp): the figures, and how they are drawn. Drawing
// happens on the thread that iterates (or waits for a map_async result), never on a pool's
// threads: a slow terminal slows the loop that asked for the report, not the results.
#include <multiproc/progress.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <limits>
#include <mutex>
#include <string>

#include "../os/system.hpp"
#include "pool/result_state.hpp"

namespace multiproc::detail {

namespace {
using report_clock = std::chrono::steady_clock;
/// A bar is redrawn at most this often (as tqdm's default): drawing per item would cost more
/// than a tiny task.
constexpr auto redraw_interval = std::chrono::milliseconds(100);
constexpr std::size_t widest_bar = 40;
constexpr std::size_t narrowest_bar = 10;
constexpr int assumed_columns = 80;

std::string clock_text(double seconds) {
  const long total = seconds > 0 ? static_cast<long>(seconds) : 0;
  char text[32];
  if (total >= 3600) {
    std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", total / 3600, total / 60 % 60, total % 60);
  } else {
    std::snprintf(text, sizeof text, "%02ld:%02ld", total / 60, total % 60);
  }
  return text;
}

/// 3 significant figures, with k and M: "0.52", "12.3", "845", "3.51k", "1.20M".
std::string rate_text(double per_second) {
  char text[32];
  if (per_second >= 1e6) {
    std::snprintf(text, sizeof text, "%.2fM", per_second / 1e6);
  } else if (per_second >= 1e4) {
    std::snprintf(text, sizeof text, "%.1fk", per_second / 1e3);
  } else if (per_second >= 1e3) {
    std::snprintf(text, sizeof text, "%.2fk", per_second / 1e3);
  } else if (per_second >= 100) {
    std::snprintf(text, sizeof text, "%.0f", per_second);
  } else if (per_second >= 10) {
    std::snprintf(text, sizeof text, "%.1f", per_second);
  } else {
    std::snprintf(text, sizeof text, "%.2f", per_second);
  }
  return text;
}

void write_err(const std::string& text) noexcept {
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}
}  // namespace

class progress_meter {
 public:
  progress_meter(const progress_options& options, std::optional<std::size_t> total)
      : enabled_(options.enabled),
        terminal_(options.enabled && os::stderr_is_terminal()),
        prefix_(options.description.empty() ? std::string() : options.description + ": "),
        total_(total),
        start_(report_clock::now()) {
    if (terminal_) draw_bar(start_);
  }

  void reach(std::size_t done) {
    if (finished_ || done <= done_) return;
    done_ = done;
    if (!enabled_) return;
    if (!terminal_) return report_line_if_due();
    const auto now = report_clock::now();
    if (now - last_draw_ >= redraw_interval || (total_ && done_ >= *total_)) draw_bar(now);
  }
  void add(std::size_t items) { reach(done_ + items); }

  void finish(bool reached_end) noexcept {
    if (finished_) return;
    finished_ = true;
    if (!enabled_) return;
    try {
      if (terminal_) {
        draw_bar(report_clock::now());
        write_err("\n");
      } else if (!reached_end) {
        write_err(prefix_ + "stopped at " + figures(false) + "\n");
      } else if (line_done_ != done_ || !line_written_) {
        write_err(prefix_ + figures(true) + "\n");
      }
    } catch (...) {
      // Out of memory building the last line: the loop's own outcome matters more.
    }
  }

 private:
  double elapsed(report_clock::time_point now) const {
    return std::chrono::duration<double>(now - start_).count();
  }

  /// "42% 420/1000 [00:02<00:03, 210 items/s]", or without a total "420 items [00:02,
  /// 210 items/s]". `time_left`: with the estimate of the time left.
  std::string figures(bool time_left, const std::string& bar = std::string()) const {
    const double seconds = elapsed(report_clock::now());
    const double rate = seconds > 0 ? static_cast<double>(done_) / seconds : 0;
    const std::string speed = (done_ != 0 && rate > 0 ? rate_text(rate) : "?") + " items/s]";
    if (!total_) {
      return std::to_string(done_) + (done_ == 1 ? " item [" : " items [") + clock_text(seconds) +
             ", " + speed;
    }
    const std::size_t total = *total_;
    const std::size_t percent = total == 0 ? 100 : done_ * 100 / total;
    // Built by appending only (GCC 12 at -O3 warns falsely on inserting at the front).
    std::string text;
    if (!bar.empty()) text.append(percent < 10 ? 2 : percent < 100 ? 1 : 0, ' ');
    text.append(std::to_string(percent)).append("%");
    if (bar.empty()) {
      text.append(" ");
    } else {
      text.append("|").append(bar).append("| ");
    }
    text.append(std::to_string(done_)).append("/").append(std::to_string(total)).append(" [");
    text.append(clock_text(seconds));
    if (time_left) {
      if (done_ >= total) {
        text.append("<").append(clock_text(0));
      } else if (rate > 0) {
        text.append("<").append(clock_text(static_cast<double>(total - done_) / rate));
      } else {
        text.append("<?");
      }
    }
    text.append(", ").append(speed);
    return text;
  }

  /// Redraws the bar in place: back to the line's start, the figures, and blanks over what a
  /// longer previous line left.
  void draw_bar(report_clock::time_point now) {
    last_draw_ = now;
    std::string line;
    if (total_ && *total_ != 0) {
      int columns = os::stderr_terminal_columns();
      if (columns <= 0) columns = assumed_columns;
      // The figures with an empty bar tell how much room the bar has.
      const std::size_t others = prefix_.size() + figures(true, "|").size();
      const std::size_t room = static_cast<std::size_t>(columns) > others + 1
                                   ? static_cast<std::size_t>(columns) - others - 1
                                   : 0;
      const std::size_t width = std::min(room, widest_bar);
      if (width >= narrowest_bar) {
        const std::size_t filled = std::min(width, done_ * width / *total_);
        line = prefix_ + figures(true, std::string(filled, '#') + std::string(width - filled, ' '));
      }
    }
    if (line.empty()) line = prefix_ + figures(true);
    const std::size_t length = line.size();
    if (length < drawn_length_) line.append(drawn_length_ - length, ' ');
    drawn_length_ = length;
    write_err("\r" + line);
  }

  /// A line at every 10 % (at 1, 10, 100, ... items without a total), for logs and pipes.
  void report_line_if_due() {
    if (total_) {
      if (*total_ == 0) return;
      const std::size_t step = std::min<std::size_t>(10, done_ * 10 / *total_);
      if (step < next_step_) return;
      next_step_ = step + 1;
    } else {
      if (done_ < next_count_) return;
      while (next_count_ <= done_ && next_count_ <= std::numeric_limits<std::size_t>::max() / 10)
        next_count_ *= 10;
    }
    write_err(prefix_ + figures(true) + "\n");
    line_done_ = done_;
    line_written_ = true;
  }

  const bool enabled_;
  const bool terminal_;
  const std::string prefix_;
  const std::optional<std::size_t> total_;
  const report_clock::time_point start_;
  std::size_t done_ = 0;
  bool finished_ = false;
  // The bar.
  report_clock::time_point last_draw_{};
  std::size_t drawn_length_ = 0;
  // The lines.
  std::size_t next_step_ = 1;   ///< the next tenth of the total to report
  std::size_t next_count_ = 1;  ///< without a total: the next power of ten to report
  std::size_t line_done_ = 0;   ///< the count the last line reported
  bool line_written_ = false;
};

std::shared_ptr<progress_meter> start_progress(const progress_options& options,
                                               std::optional<std::size_t> total) {
  return std::make_shared<progress_meter>(options, total);
}

void progress_add(progress_meter& meter, std::size_t items) {
  meter.add(items);
}

void progress_finish(progress_meter& meter, bool reached_end) noexcept {
  meter.finish(reached_end);
}

namespace {
/// Hears every part of one state settle; the waiting thread draws.
class settle_follower final : public state_watcher {
 public:
  void settled(std::size_t, const settle_news& news) noexcept override {
    std::lock_guard<std::mutex> lock(mutex);
    items = news.items_done;
    complete = news.complete;
    changed.notify_one();
  }
  std::mutex mutex;
  std::condition_variable changed;
  std::size_t items = 0;
  bool complete = false;
};
}  // namespace

void progress_follow(progress_meter& meter, result_state& state) {
  refuse_to_wait_forever_in_a_callback(state);
  settle_follower follower;
  state_watch watch;
  watch.watcher = &follower;
  watch.every_part = true;
  if (state.watch(watch)) {
    // Unwatched on every way out: the follower lives on this stack.
    struct unwatch_on_exit {
      result_state& state;
      state_watch& watch;
      ~unwatch_on_exit() { state.unwatch(watch); }
    } const unwatch{state, watch};
    std::size_t shown = state.items_done();
    meter.reach(shown);
    const counted_as_blocked counted;
    std::unique_lock<std::mutex> lock(follower.mutex);
    for (;;) {
      follower.changed.wait(lock, [&] { return follower.items > shown || follower.complete; });
      shown = std::max(shown, follower.items);
      const bool complete = follower.complete;
      lock.unlock();
      meter.reach(shown);
      lock.lock();
      if (complete) break;
    }
  }
  meter.reach(state.items_done());
  meter.finish(true);
}

}  // namespace multiproc::detail
