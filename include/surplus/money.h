#pragma once
// Money is integer micro-dollars (1e-6 USD) everywhere. No floating point.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace surplus {

/// 128-bit intermediate for exact money arithmetic (products of GPU-ms and prices).
__extension__ typedef __int128 Int128;

/// Amount in micro-dollars (1e-6 USD).
using Micros = int64_t;

inline constexpr Micros kMicrosPerDollar = 1'000'000;
/// Milliseconds in one hour: GPU-ms x (micros per GPU-hour) / kMsPerHour = micros.
inline constexpr int64_t kMsPerHour = 3'600'000;

/// Divides num by den (den > 0) rounding half to even (banker's rounding).
/// Exact for the whole Int128 range; used once per invoice line.
Int128 DivRoundHalfEven(Int128 num, Int128 den);

/// Amount owed for `gpu_ms` GPU-milliseconds at `price` micro-dollars per GPU-hour,
/// unrounded numerator: gpu_ms * price. Divide the sum of these by kMsPerHour once.
inline Int128 CostNumerator(int64_t gpu_ms, Micros price_per_gpu_hour) {
  return static_cast<Int128>(gpu_ms) * price_per_gpu_hour;
}

/// "$2.10" / "-$0.000001": dollars with at least two decimals, more if needed.
std::string FormatUsd(Micros micros);

/// Parses "2.10", "$2.10", "2" into micro-dollars. Rejects more than 6 decimals,
/// negatives, and values above `max_micros`.
absl::StatusOr<Micros> ParseUsd(absl::string_view text, Micros max_micros);

}  // namespace surplus
