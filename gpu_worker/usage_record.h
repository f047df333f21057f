#pragma once
// The usage record a worker meters, spools and sends to billing.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace surplus::worker {

/// One metered interval of one job on this worker. (worker_id, seq) identifies it;
/// billing stores it idempotently under that key.
struct UsageRecord {
  std::string worker_id;
  uint64_t seq = 0;            ///< per-worker, from 1; assigned by UsageSpool::Append
  std::string job_id;
  int32_t attempt = 0;         ///< which run of the job (the control plane's attempt number)
  std::string tenant_id;
  std::string gpu_model;       ///< e.g. "H100-80GB"
  std::string slice_profile;   ///< e.g. "3g.40gb"; the whole-GPU profile for whole GPUs
  std::string gpu_indices;     ///< GPUs of the node used, e.g. "0" or "0,1,2,3"
  int64_t start_ms = 0;        ///< UTC epoch ms, inclusive
  int64_t end_ms = 0;          ///< UTC epoch ms, exclusive
  int64_t gpu_ms = 0;          ///< GPU-milliseconds over [start_ms, end_ms)
  bool is_final = false;       ///< last record of this run of the job
};

bool operator==(const UsageRecord& a, const UsageRecord& b);
inline bool operator!=(const UsageRecord& a, const UsageRecord& b) { return !(a == b); }

/// Compact binary encoding (version byte, fixed-width little-endian integers, strings as
/// u32 length + bytes). Stable on disk: change only by adding a new version.
/// Version 1: the fields above except `attempt`. Version 2 (written now): version 1
/// followed by `attempt` as a little-endian i32. Both decode; version 1 gives attempt 0.
std::string EncodeUsageRecord(const UsageRecord& record);

/// Inverse of EncodeUsageRecord. DataLoss for a truncated, oversized or unknown encoding.
absl::StatusOr<UsageRecord> DecodeUsageRecord(absl::string_view bytes);

}  // namespace surplus::worker
