#include <map>

#include "absl/strings/str_cat.h"
#include "billing/calendar.h"
#include "src/api/invoices.h"
#include "src/api/services.h"

namespace surplus::api {
namespace v1 = surplus::v1;

namespace {
constexpr std::initializer_list<v1::Role> kReaders = {v1::ROLE_FINANCE, v1::ROLE_OPERATOR, v1::ROLE_TENANT};

// Tenants read only their own usage and invoices; `tenant_id` must be theirs or empty.
absl::StatusOr<std::string> ScopeTenant(const store::Principal& p, const std::string& requested, bool required) {
  if (p.role == v1::ROLE_TENANT) {
    if (!requested.empty() && requested != p.tenant_id) {
      return absl::NotFoundError(absl::StrCat("tenant '", requested, "' not found"));
    }
    return p.tenant_id;
  }
  if (required && requested.empty()) return absl::InvalidArgumentError("tenant_id: required");
  if (!requested.empty()) {
    if (absl::Status s = ValidateTenantId(requested, "tenant_id"); !s.ok()) return s;
  }
  return requested;
}
}  // namespace

grpc::ServerUnaryReactor* FinanceServiceImpl::GetUsage(grpc::CallbackServerContext* c, const v1::GetUsageRequest* req,
                                                       v1::GetUsageResponse* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kReaders);
    if (!p.ok()) return p.status();
    auto tenant = ScopeTenant(*p, req->tenant_id(), false);
    if (!tenant.ok()) return tenant.status();
    if (absl::Status s = ValidatePeriod(req->period(), "period"); !s.ok()) return s;
    auto month = billing::ParseBillingMonth(req->period());
    if (!month.ok()) return absl::InvalidArgumentError("period: must be YYYY-MM");
    auto data = ctx_.usage->ForPeriod(*tenant, month->start_ms, month->end_ms);
    if (!data.ok()) return data.status();
    std::map<std::pair<std::string, std::string>, v1::UsageRow> rows;
    int64_t total = 0;
    for (const auto& u : data->records) {
      // Only the part of each record inside the month, proportionally by time.
      const int64_t from = std::max(u.start_ms, month->start_ms);
      const int64_t to = std::min(u.end_ms, month->end_ms);
      const int64_t span = u.end_ms - u.start_ms;
      const int64_t gpu_ms = span <= 0 ? u.gpu_ms
                                       : static_cast<int64_t>(static_cast<Int128>(u.gpu_ms) * (to - from) / span);
      v1::UsageRow& row = rows[{u.tenant_id, u.job_id}];
      row.set_tenant_id(u.tenant_id);
      row.set_job_id(u.job_id);
      row.set_gpu_model(u.gpu_model);
      row.set_shape(data->shapes[u.job_id]);
      row.set_gpu_ms(row.gpu_ms() + gpu_ms);
      row.set_records(row.records() + 1);
      total += gpu_ms;
    }
    for (auto& [k, row] : rows) *resp->add_rows() = std::move(row);
    resp->set_total_gpu_ms(total);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* FinanceServiceImpl::GetInvoice(grpc::CallbackServerContext* c,
                                                         const v1::GetInvoiceRequest* req, v1::Invoice* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kReaders);
    if (!p.ok()) return p.status();
    auto tenant = ScopeTenant(*p, req->tenant_id(), true);
    if (!tenant.ok()) return tenant.status();
    if (absl::Status s = ValidatePeriod(req->period(), "period"); !s.ok()) return s;
    auto inv = LoadInvoice(*ctx_.usage, *tenant, req->period());
    if (!inv.ok()) return inv.status();
    *resp = std::move(*inv);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* FinanceServiceImpl::ListInvoices(grpc::CallbackServerContext* c,
                                                           const v1::ListInvoicesRequest* req,
                                                           v1::ListInvoicesResponse* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kReaders);
    if (!p.ok()) return p.status();
    auto tenant = ScopeTenant(*p, req->tenant_id(), false);
    if (!tenant.ok()) return tenant.status();
    auto list = ctx_.usage->ListFinalized(*tenant);
    if (!list.ok()) return list.status();
    for (auto& inv : *list) *resp->add_invoices() = std::move(inv);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* FinanceServiceImpl::FinalizeInvoice(grpc::CallbackServerContext* c,
                                                              const v1::FinalizeInvoiceRequest* req,
                                                              v1::Invoice* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, {v1::ROLE_FINANCE});
    if (!p.ok()) return p.status();
    if (absl::Status s = ValidateTenantId(req->tenant_id(), "tenant_id"); !s.ok()) return s;
    if (absl::Status s = ValidatePeriod(req->period(), "period"); !s.ok()) return s;
    auto month = billing::ParseBillingMonth(req->period());
    if (!month.ok()) return absl::InvalidArgumentError("period: must be YYYY-MM");
    if (NowMs() < month->end_ms) {
      return absl::FailedPreconditionError(
          absl::StrCat("period ", req->period(), " has not ended yet; finalize it after the month closes"));
    }
    auto draft = ComputeDraftInvoice(*ctx_.usage, req->tenant_id(), req->period());
    if (!draft.ok()) return draft.status();
    auto inv = ctx_.usage->Finalize(*draft, NowMs());
    if (!inv.ok()) return inv.status();
    *resp = std::move(*inv);
    return absl::OkStatus();
  });
}

}  // namespace surplus::api
