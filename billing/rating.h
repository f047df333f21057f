#pragma once
// Rating: usage intervals x price history -> exact, unrounded cost numerators.
//
// An interval is split at every price change (and at any extra cut the caller asks for,
// e.g. a month boundary). Its gpu_ms is attributed to the parts in proportion to their
// wall time by the cumulative-floor rule: with D = end - start and G = gpu_ms, the part
// [c_k, c_k+1) gets floor(G * (c_k+1 - start) / D) - floor(G * (c_k - start) / D). The parts
// sum to G exactly, the remainder of each part goes to the later parts, and a part's share
// does not depend on which other cuts were made. No rounding happens here: the cost is
// the Int128 numerator sum(gpu_ms_part * price), in micro-dollar-milliseconds per hour;
// divide by kMsPerHour once per invoice line.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "billing/usage.h"
#include "surplus/money.h"

namespace surplus::billing {

/// One part of a split interval.
struct TimeSlice {
  int64_t start_ms = 0;  ///< inclusive
  int64_t end_ms = 0;    ///< exclusive
  int64_t gpu_ms = 0;    ///< share of the interval's GPU-milliseconds
};

/// Splits [start_ms, end_ms) at each cut strictly inside it (cuts outside, or repeated,
/// are ignored; order does not matter), attributing gpu_ms by the cumulative-floor rule.
/// An empty interval (start == end) yields one slice holding all of gpu_ms.
/// Requires start_ms <= end_ms and gpu_ms >= 0.
std::vector<TimeSlice> SplitByTime(int64_t start_ms, int64_t end_ms, int64_t gpu_ms,
                                   std::vector<int64_t> cuts);

/// One part of a rated interval: a constant price holds over it.
struct RatedSlice {
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  int64_t gpu_ms = 0;
  Micros price_per_gpu_hour = 0;  ///< price in force at start_ms
};

struct RatedUsage {
  std::vector<RatedSlice> slices;  ///< in time order; gpu_ms sums to the input's
  /// sum(slice.gpu_ms * slice.price_per_gpu_hour); amount in micro-dollars is this / kMsPerHour.
  Int128 cost_numerator = 0;
};

/// Rates one interval. Splits at every price change inside it plus `extra_cuts`.
/// InvalidArgument for a reversed interval, negative gpu_ms or an invalid history.
absl::StatusOr<RatedUsage> RateInterval(int64_t start_ms, int64_t end_ms, int64_t gpu_ms,
                                        const PriceHistory& history,
                                        absl::Span<const int64_t> extra_cuts = {});

}  // namespace surplus::billing
