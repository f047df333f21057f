#pragma once
// Parsing and local validation of `surplus` command-line values. Pure: no gRPC, no
// clock, no I/O. Errors are InvalidArgument with a message that reads well after the
// flag name ("--bid: bad amount 'x': use digits like 2.10").

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "surplus/job_types.h"
#include "surplus/money.h"

namespace surplus::cli {

/// Highest price the CLI accepts for a bid or reserve price: $100,000 per GPU-hour.
/// Anything above is a typo, not a bid.
inline constexpr Micros kMaxPriceMicrosPerGpuHour = 100'000 * kMicrosPerDollar;

/// Parses a duration into milliseconds: a sequence of <integer><unit> with units
/// d, h, m, s, ms ("30m", "1h30m", "500ms", "10s"); a bare integer means seconds.
/// Rejects empty, negative, fractional and overflowing input.
absl::StatusOr<int64_t> ParseDurationMs(absl::string_view text);

/// A price per GPU-hour in dollars ("2.10", "$2.10") as exact micro-dollars, in
/// [0, kMaxPriceMicrosPerGpuHour]. No floating point anywhere.
absl::StatusOr<Micros> ParsePriceMicros(absl::string_view text);

/// Host CPUs as millicores: "4", "0.5", "1.25" (at most three decimals) or "500m"; 1 to
/// 4,096,000 millicores.
absl::StatusOr<int64_t> ParseCpuMillis(absl::string_view text);

/// Host memory in MiB: "64Gi", "64GiB", "512Mi", "512MiB", "1Ti", or a bare integer of MiB;
/// 1 MiB to 64 TiB.
absl::StatusOr<int64_t> ParseMemoryMib(absl::string_view text);

/// "spot" or "on-demand" (also "on_demand", "ondemand"); case-insensitive.
absl::StatusOr<Tier> ParseTier(absl::string_view text);

/// A gang "KxN": K nodes of N GPUs each, both in [1, 1024].
struct GangSize {
  int nodes = 0;
  int gpus_per_node = 0;
};
absl::StatusOr<GangSize> ParseGang(absl::string_view text);

/// "KEY=VALUE" with a non-empty key; the value may be empty and may contain '='.
absl::StatusOr<std::pair<std::string, std::string>> ParseKeyValue(absl::string_view text);

/// "0,1,3": distinct GPU indices in [0, 1023].
absl::StatusOr<std::vector<int>> ParseIndexList(absl::string_view text);

/// A billing period "YYYY-MM" (month 01..12, year 0001..9999).
absl::Status ValidatePeriod(absl::string_view text);

/// Tenant id: lower-case letters, digits and '-', 1 to 63 characters, starting with a
/// letter (the rule OperatorService.CreateTenant enforces).
absl::Status ValidateTenantId(absl::string_view text);

/// A positive count such as --gpus; `what` names the quantity in the error.
absl::Status ValidatePositive(int64_t value, int64_t max, absl::string_view what);

/// Prefixes a failed status's message with the flag it came from, keeping its code.
absl::Status ForFlag(absl::string_view flag, const absl::Status& status);

}  // namespace surplus::cli
