#pragma once
// Request validation: every request is checked before anything is written. Each error is
// INVALID_ARGUMENT with a message that names the field.

#include "absl/status/status.h"
#include "surplus/money.h"
#include "surplus/v1/common.pb.h"
#include "surplus/v1/operator.pb.h"
#include "surplus/v1/tenant.pb.h"

namespace surplus::api {

struct Limits {
  /// Highest bid accepted: $1,000 per GPU-hour.
  Micros max_bid = 1000 * kMicrosPerDollar;
  int max_gpus_per_node = 8;
  int max_gang_nodes = 1024;
  int max_argv = 256;
  size_t max_arg_bytes = 4096;
  int max_env = 128;
  size_t max_env_bytes = 4096;
  size_t max_request_id_bytes = 128;
  size_t max_name_bytes = 128;
  int64_t max_runtime_seconds = 30LL * 24 * 3600;
  int64_t max_builtin_duration_ms = 7LL * 24 * 3600 * 1000;
  /// Host CPU and memory one job may ask for on a node: 4,096 cores, 64 TiB.
  int64_t max_cpu_millis = 4096LL * 1000;
  int64_t max_memory_mib = 64LL * 1024 * 1024;
};

absl::Status ValidateShape(const surplus::v1::Shape& shape, const std::string& gpu_model,
                           const Limits& limits, const std::string& field);
absl::Status ValidateJobSpec(const surplus::v1::JobSpec& spec, const Limits& limits);
/// Tier, bid and maximum runtime, as a job spec (field names after `prefix`, e.g. "spec.")
/// and a quote both carry them: a quote accepts what a submit would.
absl::Status ValidateTerms(surplus::v1::Tier tier, int64_t bid_micros_per_gpu_hour,
                           int64_t max_runtime_seconds, const Limits& limits,
                           const std::string& prefix);
absl::Status ValidateTenantId(const std::string& id, const std::string& field);
/// Node names travel in lists (placements, nudges), so they hold no separators.
absl::Status ValidateNodeName(const std::string& name, const std::string& field);
absl::Status ValidateCreateTenant(const surplus::v1::CreateTenantRequest& req);
absl::Status ValidateJobId(const std::string& id);
/// "YYYY-MM" with a month 01..12.
absl::Status ValidatePeriod(const std::string& period, const std::string& field);

}  // namespace surplus::api
