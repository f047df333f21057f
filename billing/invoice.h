#pragma once
// Invoices: per tenant per calendar month (UTC), one line per job. Rounding happens once
// per line (half to even); the total is the sum of the rounded lines.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "billing/calendar.h"
#include "billing/usage.h"
#include "surplus/money.h"

namespace surplus::billing {

/// The price histories rating may use.
struct PriceBook {
  /// By job id: spot jobs (clearing price capped at the job's bid, as the control plane
  /// recorded it) and any job whose price the control plane recorded individually.
  std::map<std::string, PriceHistory, std::less<>> by_job;
  /// By GPU model (pool): the fallback, e.g. the on-demand list price history.
  std::map<std::string, PriceHistory, std::less<>> by_pool;

  /// The job's own history if there is one, else its pool's, else nullptr.
  const PriceHistory* Find(absl::string_view job_id, absl::string_view gpu_model) const;
};

enum class InvoiceStatus { kDraft, kFinalized };

/// "draft" / "finalized".
absl::string_view InvoiceStatusName(InvoiceStatus status);

/// One job's usage within the month.
struct InvoiceLine {
  std::string job_id;
  std::string gpu_model;
  std::string shape;
  int64_t gpu_ms = 0;  ///< GPU-milliseconds within the month
  /// Unrounded cost: sum(gpu_ms_part * price per GPU-hour) over the rated parts.
  Int128 cost_numerator = 0;
  /// cost_numerator / gpu_ms, half to even: micro-dollars per GPU-hour (0 if gpu_ms is 0).
  Micros average_price_per_gpu_hour = 0;
  /// cost_numerator / kMsPerHour, half to even: micro-dollars. The only rounding step.
  Micros amount = 0;
};

struct Invoice {
  std::string tenant_id;
  BillingMonth month;
  /// Set by the billing service; BuildInvoice always returns a draft with no number.
  InvoiceStatus status = InvoiceStatus::kDraft;
  std::string invoice_number;      ///< empty until finalized
  std::vector<InvoiceLine> lines;  ///< sorted by (job_id, gpu_model, shape)
  Micros total = 0;                ///< sum of line amounts, micro-dollars
};

/// Builds the draft invoice of `tenant_id` for `month` from `records` (records of other
/// tenants are ignored). Each record is split at the month's boundaries and at its price
/// changes in one pass (see rating.h); only the parts inside the month count. Lines with
/// no GPU-milliseconds in the month are left out.
/// Errors: InvalidArgument for an invalid record or a repeated (worker_id, seq) (dedupe
/// first: see DedupeUsage); FailedPrecondition when a job has no price history;
/// OutOfRange when an amount does not fit in int64 micro-dollars.
absl::StatusOr<Invoice> BuildInvoice(absl::string_view tenant_id, const BillingMonth& month,
                                     absl::Span<const UsageRecord> records,
                                     const PriceBook& prices);

/// Draft invoices of every tenant with usage in `month`, sorted by tenant id.
absl::StatusOr<std::vector<Invoice>> BuildInvoices(const BillingMonth& month,
                                                   absl::Span<const UsageRecord> records,
                                                   const PriceBook& prices);

}  // namespace surplus::billing
