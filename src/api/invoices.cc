#include "src/api/invoices.h"

#include <algorithm>

#include "billing/calendar.h"
#include "billing/invoice.h"

namespace surplus::api {
namespace v1 = surplus::v1;

absl::StatusOr<v1::Invoice> ComputeDraftInvoice(store::PgUsageStore& usage, const std::string& tenant_id,
                                                const std::string& period) {
  auto month = billing::ParseBillingMonth(period);
  if (!month.ok()) return absl::InvalidArgumentError(std::string("period: ") + std::string(month.status().message()));
  auto data = usage.ForPeriod(tenant_id, month->start_ms, month->end_ms);
  if (!data.ok()) return data.status();
  std::vector<billing::UsageRecord> records;
  records.reserve(data->records.size());
  for (const auto& u : data->records) {
    billing::UsageRecord r;
    r.worker_id = u.worker_id;
    r.seq = static_cast<uint64_t>(u.seq);
    r.job_id = u.job_id;
    r.tenant_id = u.tenant_id;
    r.gpu_model = u.gpu_model;
    auto shape = data->shapes.find(u.job_id);
    r.shape = shape == data->shapes.end() ? u.slice_profile : shape->second;
    r.start_ms = u.start_ms;
    r.end_ms = u.end_ms;
    r.gpu_ms = u.gpu_ms;
    records.push_back(std::move(r));
  }
  billing::PriceBook book;
  for (const auto& [key, points] : data->prices) {
    billing::PriceHistory& h = book.by_job[key.first];
    for (const auto& p : points) h.push_back(billing::PricePoint{p.effective_ms, p.price});
  }
  for (auto& [job, h] : book.by_job) {
    // Attempts follow one another; keep one point per instant (the later attempt's).
    std::stable_sort(h.begin(), h.end(), [](const auto& a, const auto& b) {
      return a.effective_from_ms < b.effective_from_ms;
    });
    billing::PriceHistory uniq;
    for (const auto& p : h) {
      if (!uniq.empty() && uniq.back().effective_from_ms == p.effective_from_ms) uniq.back() = p;
      else uniq.push_back(p);
    }
    h = std::move(uniq);
  }
  auto inv = billing::BuildInvoice(tenant_id, *month, records, book);
  if (!inv.ok()) return inv.status();
  v1::Invoice out;
  out.set_tenant_id(tenant_id);
  out.set_period(period);
  out.set_status(v1::INVOICE_STATUS_DRAFT);
  for (const auto& l : inv->lines) {
    v1::InvoiceLine* line = out.add_lines();
    line->set_job_id(l.job_id);
    line->set_gpu_model(l.gpu_model);
    line->set_shape(l.shape);
    line->set_gpu_ms(l.gpu_ms);
    line->set_average_price_micros_per_gpu_hour(l.average_price_per_gpu_hour);
    line->set_amount_micros(l.amount);
  }
  out.set_total_micros(inv->total);
  return out;
}

absl::StatusOr<v1::Invoice> LoadInvoice(store::PgUsageStore& usage, const std::string& tenant_id,
                                        const std::string& period) {
  auto finalized = usage.FinalizedInvoice(tenant_id, period);
  if (!finalized.ok()) return finalized.status();
  if (finalized->has_value()) return **finalized;
  return ComputeDraftInvoice(usage, tenant_id, period);
}

}  // namespace surplus::api
