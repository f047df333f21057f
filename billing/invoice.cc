#include "billing/invoice.h"

#include <limits>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "billing/rating.h"

namespace surplus::billing {

const PriceHistory* PriceBook::Find(absl::string_view job_id,
                                    absl::string_view gpu_model) const {
  if (auto it = by_job.find(job_id); it != by_job.end()) return &it->second;
  if (auto it = by_pool.find(gpu_model); it != by_pool.end()) return &it->second;
  return nullptr;
}

absl::string_view InvoiceStatusName(InvoiceStatus status) {
  switch (status) {
    case InvoiceStatus::kDraft:
      return "draft";
    case InvoiceStatus::kFinalized:
      return "finalized";
  }
  return "unknown";
}

namespace {

constexpr Int128 kMaxMicros = std::numeric_limits<Micros>::max();

using LineKey = std::tuple<std::string, std::string, std::string>;  // job, model, shape

// InvalidArgument when a record is invalid or a (worker_id, seq) repeats.
absl::Status CheckRecords(const std::vector<const UsageRecord*>& records) {
  absl::flat_hash_set<std::pair<std::string, uint64_t>> seen;
  for (const UsageRecord* record : records) {
    const UsageRecord& r = *record;
    if (absl::Status s = ValidateUsageRecord(r); !s.ok()) return s;
    if (!seen.emplace(r.worker_id, r.seq).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "usage record ", r.worker_id, "/", r.seq, " appears twice; dedupe before invoicing"));
    }
  }
  return absl::OkStatus();
}

// Builds one tenant's invoice from its (checked) records.
absl::StatusOr<Invoice> BuildChecked(absl::string_view tenant_id, const BillingMonth& month,
                                     const std::vector<const UsageRecord*>& records,
                                     const PriceBook& prices) {
  std::map<LineKey, InvoiceLine> lines;
  const int64_t month_cuts[] = {month.start_ms, month.end_ms};

  for (const UsageRecord* record : records) {
    const UsageRecord& r = *record;
    // Quick reject of records entirely outside the month. An empty interval belongs to
    // the month containing its start.
    if (r.start_ms >= month.end_ms || (r.end_ms <= month.start_ms && r.end_ms > r.start_ms) ||
        (r.end_ms == r.start_ms && r.start_ms < month.start_ms)) {
      continue;
    }
    const PriceHistory* history = prices.Find(r.job_id, r.gpu_model);
    if (history == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "no price history for job ", r.job_id, " or pool ", r.gpu_model));
    }
    absl::StatusOr<RatedUsage> rated =
        RateInterval(r.start_ms, r.end_ms, r.gpu_ms, *history, month_cuts);
    if (!rated.ok()) {
      return absl::Status(rated.status().code(),
                          absl::StrCat("job ", r.job_id, ": ", rated.status().message()));
    }
    InvoiceLine* line = nullptr;
    for (const RatedSlice& s : rated->slices) {
      if (s.start_ms < month.start_ms || s.start_ms >= month.end_ms) continue;
      if (line == nullptr) {
        line = &lines[LineKey(r.job_id, r.gpu_model, r.shape)];
      }
      line->gpu_ms += s.gpu_ms;
      line->cost_numerator += CostNumerator(s.gpu_ms, s.price_per_gpu_hour);
    }
  }

  Invoice invoice;
  invoice.tenant_id = std::string(tenant_id);
  invoice.month = month;
  Int128 total = 0;
  for (auto& [key, line] : lines) {
    if (line.gpu_ms == 0) continue;
    std::tie(line.job_id, line.gpu_model, line.shape) = key;
    const Int128 amount = DivRoundHalfEven(line.cost_numerator, kMsPerHour);
    const Int128 average = DivRoundHalfEven(line.cost_numerator, line.gpu_ms);
    if (amount > kMaxMicros || average > kMaxMicros) {
      return absl::OutOfRangeError(absl::StrCat("amount of job ", line.job_id, " overflows"));
    }
    line.amount = static_cast<Micros>(amount);
    line.average_price_per_gpu_hour = static_cast<Micros>(average);
    total += amount;
    if (total > kMaxMicros) return absl::OutOfRangeError("invoice total overflows");
    invoice.lines.push_back(std::move(line));
  }
  invoice.total = static_cast<Micros>(total);
  return invoice;
}

}  // namespace

absl::StatusOr<Invoice> BuildInvoice(absl::string_view tenant_id, const BillingMonth& month,
                                     absl::Span<const UsageRecord> records,
                                     const PriceBook& prices) {
  std::vector<const UsageRecord*> mine;
  for (const UsageRecord& r : records) {
    if (r.tenant_id == tenant_id) mine.push_back(&r);
  }
  if (absl::Status s = CheckRecords(mine); !s.ok()) return s;
  return BuildChecked(tenant_id, month, mine, prices);
}

absl::StatusOr<std::vector<Invoice>> BuildInvoices(const BillingMonth& month,
                                                   absl::Span<const UsageRecord> records,
                                                   const PriceBook& prices) {
  std::vector<const UsageRecord*> all;
  std::map<std::string, std::vector<const UsageRecord*>> by_tenant;
  for (const UsageRecord& r : records) {
    all.push_back(&r);
    by_tenant[r.tenant_id].push_back(&r);
  }
  if (absl::Status s = CheckRecords(all); !s.ok()) return s;
  std::vector<Invoice> out;
  for (const auto& [tenant, mine] : by_tenant) {
    absl::StatusOr<Invoice> invoice = BuildChecked(tenant, month, mine, prices);
    if (!invoice.ok()) return invoice.status();
    if (!invoice->lines.empty()) out.push_back(*std::move(invoice));
  }
  return out;
}

}  // namespace surplus::billing
