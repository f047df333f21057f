#include "src/store/usage_store.h"

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "src/common/grpc_util.h"

namespace surplus::store {
namespace v1 = surplus::v1;

PgUsageStore::PgUsageStore(PgPool& pool) : pool_(pool) {
  pool_.AddPrepared(
      "insert_usage",
      "INSERT INTO usage_records (worker_id, seq, job_id, attempt, tenant_id, gpu_model,"
      " slice_profile, gpu_indices, start_ms, end_ms, gpu_ms, final, received_ms)"
      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
      " ON CONFLICT (worker_id, seq) DO NOTHING");
}

absl::StatusOr<std::vector<uint64_t>> PgUsageStore::Insert(const std::vector<v1::UsageRecord>& records,
                                                           int64_t now_ms) {
  std::vector<uint64_t> acked;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    acked.clear();
    for (const auto& r : records) {
      tx.exec_prepared("insert_usage", r.worker_id(), static_cast<int64_t>(r.seq()), r.job_id(), r.attempt(),
                       r.tenant_id(), r.gpu_model(), r.slice_profile(), absl::StrJoin(r.gpu_indices(), ","),
                       r.start_ms(), r.end_ms(), r.gpu_ms(), r.final(), now_ms);
      acked.push_back(r.seq());
    }
  });
  if (!st.ok()) return st;
  return acked;
}

absl::StatusOr<UsageForPeriod> PgUsageStore::ForPeriod(const std::string& tenant_id, int64_t from_ms,
                                                       int64_t to_ms) {
  UsageForPeriod out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    out = UsageForPeriod{};
    auto r = tx.exec_params(
        "SELECT u.worker_id, u.seq, u.job_id, u.attempt, u.tenant_id, u.gpu_model, u.slice_profile,"
        " u.start_ms, u.end_ms, u.gpu_ms, j.shape_kind, j.slice_profile, j.gpus_per_node, j.node_count"
        " FROM usage_records u LEFT JOIN jobs j ON j.id = u.job_id"
        " WHERE ($1 = '' OR u.tenant_id = $1) AND u.end_ms > $2 AND u.start_ms < $3"
        " ORDER BY u.tenant_id, u.job_id, u.start_ms, u.worker_id, u.seq",
        tenant_id, from_ms, to_ms);
    std::vector<std::string> job_ids;
    for (const auto& row : r) {
      StoredUsage u;
      u.worker_id = row[0].as<std::string>();
      u.seq = row[1].as<int64_t>();
      u.job_id = row[2].as<std::string>();
      u.attempt = row[3].as<int>();
      u.tenant_id = row[4].as<std::string>();
      u.gpu_model = row[5].as<std::string>();
      u.slice_profile = row[6].as<std::string>();
      u.start_ms = row[7].as<int64_t>();
      u.end_ms = row[8].as<int64_t>();
      u.gpu_ms = row[9].as<int64_t>();
      if (!out.shapes.count(u.job_id)) {
        job_ids.push_back(u.job_id);
        const std::string kind = row[10].is_null() ? "" : row[10].as<std::string>();
        if (kind == "slice") {
          out.shapes[u.job_id] = row[11].as<std::string>();
        } else if (kind == "gang") {
          out.shapes[u.job_id] = absl::StrCat(row[13].as<int>(), "x", row[12].as<int>(), " GPUs");
        } else if (kind == "gpus") {
          const int n = row[12].as<int>();
          out.shapes[u.job_id] = absl::StrCat(n, n == 1 ? " GPU" : " GPUs");
        } else {
          out.shapes[u.job_id] = u.slice_profile;
        }
      }
      out.records.push_back(std::move(u));
    }
    if (job_ids.empty()) return;
    auto p = tx.exec_params(
        "SELECT job_id, attempt, effective_ms, price_micros FROM job_prices"
        " WHERE job_id = ANY (string_to_array($1, ',')) ORDER BY job_id, attempt, effective_ms",
        absl::StrJoin(job_ids, ","));
    for (const auto& row : p) {
      out.prices[{row[0].as<std::string>(), row[1].as<int>()}].push_back(
          PricePoint{row[2].as<int64_t>(), row[3].as<int64_t>()});
    }
  });
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<std::optional<v1::Invoice>> PgUsageStore::FinalizedInvoice(const std::string& tenant_id,
                                                                         const std::string& period) {
  std::optional<v1::Invoice> out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    out.reset();
    auto r = tx.exec_params(
        "SELECT lines_json FROM invoices WHERE tenant_id = $1 AND period = $2 AND status = 'finalized'",
        tenant_id, period);
    if (r.empty()) return;
    v1::Invoice inv;
    (void)google::protobuf::util::JsonStringToMessage(r[0][0].as<std::string>(), &inv);
    out = inv;
  });
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<v1::Invoice> PgUsageStore::Finalize(v1::Invoice invoice, int64_t now_ms) {
  bool already = false;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    already = false;
    auto r = tx.exec_params("SELECT status FROM invoices WHERE tenant_id = $1 AND period = $2 FOR UPDATE",
                            invoice.tenant_id(), invoice.period());
    if (!r.empty() && r[0][0].as<std::string>() == "finalized") {
      already = true;
      return;
    }
    const int64_t n = tx.exec("SELECT nextval('invoice_numbers')")[0][0].as<int64_t>();
    invoice.set_number(absl::StrFormat("INV-%s-%06d", invoice.period(), n));
    invoice.set_status(v1::INVOICE_STATUS_FINALIZED);
    SetTimestampMs(now_ms, invoice.mutable_finalized_at());
    std::string json;
    (void)google::protobuf::util::MessageToJsonString(invoice, &json);
    tx.exec_params(
        "INSERT INTO invoices (tenant_id, period, status, number, total_micros, lines_json, finalized_ms)"
        " VALUES ($1, $2, 'finalized', $3, $4, $5, $6)",
        invoice.tenant_id(), invoice.period(), invoice.number(), invoice.total_micros(), json, now_ms);
  });
  if (!st.ok()) return st;
  if (already) {
    return absl::FailedPreconditionError(
        absl::StrCat("invoice ", invoice.tenant_id(), " ", invoice.period(), " is already finalized"));
  }
  return invoice;
}

absl::StatusOr<std::vector<v1::Invoice>> PgUsageStore::ListFinalized(const std::string& tenant_id) {
  std::vector<v1::Invoice> out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    out.clear();
    auto r = tx.exec_params(
        "SELECT tenant_id, period, number, total_micros, finalized_ms FROM invoices"
        " WHERE ($1 = '' OR tenant_id = $1) ORDER BY tenant_id, period",
        tenant_id);
    for (const auto& row : r) {
      v1::Invoice& inv = out.emplace_back();
      inv.set_tenant_id(row[0].as<std::string>());
      inv.set_period(row[1].as<std::string>());
      inv.set_status(v1::INVOICE_STATUS_FINALIZED);
      inv.set_number(row[2].is_null() ? "" : row[2].as<std::string>());
      inv.set_total_micros(row[3].as<int64_t>());
      if (!row[4].is_null()) SetTimestampMs(row[4].as<int64_t>(), inv.mutable_finalized_at());
    }
  });
  if (!st.ok()) return st;
  return out;
}

}  // namespace surplus::store
