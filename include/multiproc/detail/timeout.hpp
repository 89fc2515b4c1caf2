// multiproc — timeouts of any std::chrono type, as the library takes them.
#pragma once

#include <chrono>
#include <optional>

namespace multiproc::detail {

/// Beyond this a timeout means "no deadline": the waits then block without one, so a
/// deadline never overflows a clock's range (e.g. seconds::max() or hours(1'000'000)).
inline constexpr std::chrono::nanoseconds no_deadline_beyond = std::chrono::hours(24 * 365 * 100);

/// `timeout` as nanoseconds without overflow: negative becomes zero, and anything at or past
/// no_deadline_beyond becomes exactly that (floating-point durations included).
template <class Rep, class Period>
constexpr std::chrono::nanoseconds saturated_timeout(std::chrono::duration<Rep, Period> timeout) {
  using seconds_float = std::chrono::duration<long double>;
  const seconds_float asked(timeout);
  if (!(asked > seconds_float::zero())) return std::chrono::nanoseconds::zero();  // also NaN
  if (asked >= seconds_float(no_deadline_beyond)) return no_deadline_beyond;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(timeout);
}

/// A timeout as the blocking calls take it: nullopt for "no deadline" (saturated as above).
template <class Rep, class Period>
std::optional<std::chrono::nanoseconds> optional_timeout(std::chrono::duration<Rep, Period> t) {
  const auto saturated = saturated_timeout(t);
  if (saturated >= no_deadline_beyond) return std::nullopt;
  return saturated;
}

}  // namespace multiproc::detail
