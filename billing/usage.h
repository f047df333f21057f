#pragma once
// Usage records as billing sees them, and the price histories they are rated against.

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "surplus/money.h"

namespace surplus::billing {

/// One metered interval of one job on one worker. (worker_id, seq) identifies it.
struct UsageRecord {
  std::string worker_id;
  uint64_t seq = 0;        ///< per-worker sequence number, starting at 1
  std::string job_id;
  std::string tenant_id;
  std::string gpu_model;   ///< e.g. "H100-80GB"
  std::string shape;       ///< display text of the slice or GPU count, e.g. "3g.40gb"
  int64_t start_ms = 0;    ///< UTC epoch milliseconds, inclusive
  int64_t end_ms = 0;      ///< UTC epoch milliseconds, exclusive; >= start_ms
  int64_t gpu_ms = 0;      ///< GPU-milliseconds metered over [start_ms, end_ms)
};

/// InvalidArgument when the interval is reversed, gpu_ms is negative, or an id is empty.
absl::Status ValidateUsageRecord(const UsageRecord& record);

/// A price that takes effect at `effective_from_ms` and holds until the next point.
struct PricePoint {
  int64_t effective_from_ms = 0;  ///< UTC epoch milliseconds
  Micros price_per_gpu_hour = 0;  ///< micro-dollars per GPU-hour, >= 0
};

/// Price points in strictly increasing effective_from_ms order. A spot job's history is
/// the clearing price of its pool capped at its bid, as recorded per job by the control
/// plane; an on-demand job is rated against its pool's list-price history.
using PriceHistory = std::vector<PricePoint>;

/// InvalidArgument unless non-empty, strictly increasing in time and non-negative.
absl::Status ValidatePriceHistory(const PriceHistory& history);

/// Price in force at `t_ms`: the last point with effective_from_ms <= t_ms. Before the
/// first point the first point's price applies (a worker's clock may run slightly behind
/// the control plane's, and the first point is the price the job was admitted at).
/// Requires a valid, non-empty history.
Micros PriceAt(const PriceHistory& history, int64_t t_ms);

/// Result of DedupeUsage.
struct DedupeResult {
  std::vector<UsageRecord> records;  ///< first occurrence of each (worker_id, seq), input order
  size_t duplicates = 0;             ///< later copies dropped (identical or not)
  /// Keys whose copies differ in content: a worker reused a sequence number. The first
  /// copy is kept; the caller decides whether to alert.
  std::vector<std::pair<std::string, uint64_t>> conflicting;
};

/// Drops repeated deliveries of the same (worker_id, seq). Stable: keeps input order.
DedupeResult DedupeUsage(std::vector<UsageRecord> records);

bool operator==(const UsageRecord& a, const UsageRecord& b);
inline bool operator!=(const UsageRecord& a, const UsageRecord& b) { return !(a == b); }

}  // namespace surplus::billing
