#pragma once
// Money is integer micro-dollars (1e-6 USD) everywhere. No floating point.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace surplus {

/// Amount in micro-dollars (1e-6 USD).
using Micros = int64_t;

inline constexpr Micros kMicrosPerDollar = 1'000'000;
/// Milliseconds in one hour: GPU-ms x (micros per GPU-hour) / kMsPerHour = micros.
inline constexpr int64_t kMsPerHour = 3'600'000;

/// Divides num by den (den > 0) rounding half to even (banker's rounding).
/// Exact for the whole __int128 range; used once per invoice line.
__int128 DivRoundHalfEven(__int128 num, __int128 den);

/// Amount owed for `gpu_ms` GPU-milliseconds at `price` micro-dollars per GPU-hour,
/// unrounded numerator: gpu_ms * price. Divide the sum of these by kMsPerHour once.
inline __int128 CostNumerator(int64_t gpu_ms, Micros price_per_gpu_hour) {
  return static_cast<__int128>(gpu_ms) * price_per_gpu_hour;
}

/// "$2.10" / "-$0.000001": dollars with at least two decimals, more if needed.
std::string FormatUsd(Micros micros);

/// Parses "2.10", "$2.10", "2" into micro-dollars. Rejects more than 6 decimals,
/// negatives, and values above `max_micros`.
absl::StatusOr<Micros> ParseUsd(absl::string_view text, Micros max_micros);

}  // namespace surplus
