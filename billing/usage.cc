#include "billing/usage.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace surplus::billing {

absl::Status ValidateUsageRecord(const UsageRecord& record) {
  if (record.worker_id.empty() || record.job_id.empty() || record.tenant_id.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("usage record ", record.worker_id, "/", record.seq,
                     ": worker_id, job_id and tenant_id are required"));
  }
  if (record.end_ms < record.start_ms) {
    return absl::InvalidArgumentError(absl::StrCat("usage record ", record.worker_id, "/",
                                                   record.seq, ": end_ms ", record.end_ms,
                                                   " is before start_ms ", record.start_ms));
  }
  if (record.gpu_ms < 0) {
    return absl::InvalidArgumentError(absl::StrCat("usage record ", record.worker_id, "/",
                                                   record.seq, ": negative gpu_ms"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePriceHistory(const PriceHistory& history) {
  if (history.empty()) return absl::InvalidArgumentError("empty price history");
  for (size_t i = 0; i < history.size(); ++i) {
    if (history[i].price_per_gpu_hour < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative price at ", history[i].effective_from_ms));
    }
    if (i > 0 && history[i].effective_from_ms <= history[i - 1].effective_from_ms) {
      return absl::InvalidArgumentError(absl::StrCat(
          "price history not strictly increasing at ", history[i].effective_from_ms));
    }
  }
  return absl::OkStatus();
}

Micros PriceAt(const PriceHistory& history, int64_t t_ms) {
  // First point strictly after t; the one before it is in force.
  auto it = std::upper_bound(
      history.begin(), history.end(), t_ms,
      [](int64_t t, const PricePoint& p) { return t < p.effective_from_ms; });
  if (it == history.begin()) return history.front().price_per_gpu_hour;
  return std::prev(it)->price_per_gpu_hour;
}

bool operator==(const UsageRecord& a, const UsageRecord& b) {
  return std::tie(a.worker_id, a.seq, a.job_id, a.tenant_id, a.gpu_model, a.shape, a.start_ms,
                  a.end_ms, a.gpu_ms) == std::tie(b.worker_id, b.seq, b.job_id, b.tenant_id,
                                                  b.gpu_model, b.shape, b.start_ms, b.end_ms,
                                                  b.gpu_ms);
}

DedupeResult DedupeUsage(std::vector<UsageRecord> records) {
  DedupeResult out;
  out.records.reserve(records.size());
  // Key -> index into out.records of the kept copy.
  absl::flat_hash_map<std::pair<std::string, uint64_t>, size_t> seen;
  std::set<std::pair<std::string, uint64_t>> conflicting;
  for (UsageRecord& r : records) {
    auto key = std::make_pair(r.worker_id, r.seq);
    auto [it, inserted] = seen.emplace(key, out.records.size());
    if (inserted) {
      out.records.push_back(std::move(r));
      continue;
    }
    ++out.duplicates;
    if (out.records[it->second] != r) conflicting.insert(std::move(key));
  }
  out.conflicting.assign(conflicting.begin(), conflicting.end());
  return out;
}

}  // namespace surplus::billing
