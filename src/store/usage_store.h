#pragma once
// Usage records (stored exactly once per (worker, seq)) and what invoices are built from.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/store/pg_pool.h"
#include "surplus/money.h"
#include "surplus/v1/billing.pb.h"
#include "surplus/v1/finance.pb.h"

namespace surplus::store {

struct StoredUsage {
  std::string worker_id;
  int64_t seq = 0;
  std::string job_id;
  int attempt = 0;
  std::string tenant_id;
  std::string gpu_model;
  std::string slice_profile;
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  int64_t gpu_ms = 0;
};

struct PricePoint {
  int64_t effective_ms = 0;
  Micros price = 0;
};

struct UsageForPeriod {
  std::vector<StoredUsage> records;
  /// (job_id, attempt) -> price history, ascending.
  std::map<std::pair<std::string, int>, std::vector<PricePoint>> prices;
  /// job_id -> shape text as the tenant asked ("1g.10gb", "2 GPUs", "2x8 GPUs").
  std::map<std::string, std::string> shapes;
};

class PgUsageStore {
 public:
  explicit PgUsageStore(PgPool& pool);

  /// Stores the records; duplicates (same worker and seq) are no-ops. Returns the seqs
  /// that are now stored (new or old), all of them on success.
  absl::StatusOr<std::vector<uint64_t>> Insert(const std::vector<surplus::v1::UsageRecord>& records,
                                               int64_t now_ms);
  /// Records overlapping [from_ms, to_ms) of a tenant (empty = all tenants), with the
  /// price history of their jobs.
  absl::StatusOr<UsageForPeriod> ForPeriod(const std::string& tenant_id, int64_t from_ms, int64_t to_ms);

  /// A finalized invoice, if any (lines as stored JSON).
  absl::StatusOr<std::optional<surplus::v1::Invoice>> FinalizedInvoice(const std::string& tenant_id,
                                                                       const std::string& period);
  /// Freezes `invoice` as finalized with the next invoice number. ALREADY_EXISTS when it is.
  absl::StatusOr<surplus::v1::Invoice> Finalize(surplus::v1::Invoice invoice, int64_t now_ms);
  absl::StatusOr<std::vector<surplus::v1::Invoice>> ListFinalized(const std::string& tenant_id);

 private:
  PgPool& pool_;
};

}  // namespace surplus::store
