#include "src/cli/views.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/json_util.h"
#include "src/common/grpc_util.h"
#include "surplus/host_resources.h"

namespace surplus::cli {
namespace {

std::string Ts(const google::protobuf::Timestamp& ts) { return FormatTimestampMs(TimestampMs(ts)); }

std::string PlacementText(const v1::Job& job) {
  std::vector<std::string> parts;
  for (const v1::Placement& p : job.placements()) {
    std::string s = p.node();
    if (!p.gpu_indices().empty()) absl::StrAppend(&s, ":", absl::StrJoin(p.gpu_indices(), ","));
    if (!p.slice_profile().empty()) absl::StrAppend(&s, "/", p.slice_profile(), "@", p.slot_start());
    parts.push_back(std::move(s));
  }
  return absl::StrJoin(parts, " ");
}

std::string InvoiceStatusName(v1::InvoiceStatus status) {
  switch (status) {
    case v1::INVOICE_STATUS_DRAFT:
      return "draft";
    case v1::INVOICE_STATUS_FINALIZED:
      return "finalized";
    default:
      return "unknown";
  }
}

std::string GpuUseName(v1::GpuUse use) {
  switch (use) {
    case v1::GPU_USE_IDLE:
      return "idle";
    case v1::GPU_USE_SOLD:
      return "sold";
    case v1::GPU_USE_OWNER_BUSY:
      return "owner-busy";
    case v1::GPU_USE_UNAVAILABLE:
      return "unavailable";
    default:
      return "unknown";
  }
}

std::string Limit(int32_t value) { return value == 0 ? "unlimited" : absl::StrCat(value); }

}  // namespace

std::string TierName(v1::Tier tier) {
  switch (tier) {
    case v1::TIER_SPOT:
      return "spot";
    case v1::TIER_ON_DEMAND:
      return "on-demand";
    default:
      return "unspecified";
  }
}

std::string StateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  absl::string_view view(name);
  if (absl::ConsumePrefix(&view, "JOB_STATE_")) return std::string(view);
  return name;
}

std::string RoleName(v1::Role role) {
  switch (role) {
    case v1::ROLE_TENANT:
      return "tenant";
    case v1::ROLE_OPERATOR:
      return "operator";
    case v1::ROLE_FINANCE:
      return "finance";
    case v1::ROLE_WORKER:
      return "worker";
    default:
      return "unspecified";
  }
}

std::string ShapeText(const v1::Shape& shape) {
  std::string text;
  switch (shape.kind_case()) {
    case v1::Shape::kSliceProfile:
      text = shape.slice_profile();
      break;
    case v1::Shape::kWholeGpus:
      text = absl::StrCat(shape.whole_gpus().count(), shape.whole_gpus().count() == 1 ? " GPU" : " GPUs");
      break;
    case v1::Shape::kGang:
      text = absl::StrCat(shape.gang().nodes(), "x", shape.gang().gpus_per_node(), " GPUs");
      break;
    default:
      return "";
  }
  // Host resources per node, when the job asked for them.
  if (const std::string host = FormatHostRequest(shape.cpu_millis(), shape.memory_mib()); !host.empty()) {
    absl::StrAppend(&text, ", ", host);
  }
  return text;
}

bool IsTerminal(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_SUCCEEDED:
    case v1::JOB_STATE_FAILED:
    case v1::JOB_STATE_CANCELLED:
    case v1::JOB_STATE_PREEMPTED:
    case v1::JOB_STATE_LOST:
      return true;
    default:
      return false;
  }
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.add_whitespace = false;
  std::string out;
  // Serialising a well-formed message cannot fail; an empty object is the fallback.
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) out = "{}";
  return out;
}

Table JobsTable(const std::vector<const v1::Job*>& jobs) {
  Table table({"ID", "NAME", "STATE", "TIER", "SHAPE", "MODEL", "BID", "PRICE", "CREATED",
               "REASON"});
  for (const v1::Job* job : jobs) {
    const v1::JobSpec& spec = job->spec();
    const bool spot = spec.tier() == v1::TIER_SPOT;
    table.AddRow({job->id(), spec.name(), StateName(job->state()), TierName(spec.tier()),
                  ShapeText(spec.shape()),
                  job->gpu_model().empty() ? spec.gpu_model() : job->gpu_model(),
                  spot ? FormatPricePerGpuHour(spec.bid_micros_per_gpu_hour()) : "",
                  job->state() == v1::JOB_STATE_RUNNING
                      ? FormatPricePerGpuHour(job->price_micros_per_gpu_hour())
                      : "",
                  Ts(job->created_at()), job->reason()});
  }
  return table;
}

Details JobDetails(const v1::Job& job) {
  const v1::JobSpec& spec = job.spec();
  Details d = {
      {"id", job.id()},
      {"name", spec.name()},
      {"tenant", job.tenant_id()},
      {"state", StateName(job.state())},
      {"reason", job.reason()},
      {"tier", TierName(spec.tier())},
      {"shape", ShapeText(spec.shape())},
      {"model", job.gpu_model().empty() ? spec.gpu_model() : job.gpu_model()},
  };
  if (spec.tier() == v1::TIER_SPOT) {
    d.emplace_back("bid", FormatPricePerGpuHour(spec.bid_micros_per_gpu_hour()));
  }
  if (job.state() == v1::JOB_STATE_RUNNING) {
    d.emplace_back("price", FormatPricePerGpuHour(job.price_micros_per_gpu_hour()));
  }
  d.emplace_back("max runtime", spec.max_runtime_seconds() == 0
                                    ? "none"
                                    : FormatDurationMs(spec.max_runtime_seconds() * 1000));
  d.emplace_back("requeue", spec.requeue() ? "yes" : "no");
  d.emplace_back("attempt", absl::StrCat(job.attempt()));
  d.emplace_back("placement", PlacementText(job));
  d.emplace_back("exit code", job.has_exit_code() ? absl::StrCat(job.exit_code()) : "");
  d.emplace_back("created", Ts(job.created_at()));
  d.emplace_back("started", Ts(job.started_at()));
  d.emplace_back("finished", Ts(job.finished_at()));
  d.emplace_back("request id", spec.request_id());
  return d;
}

std::string EventLine(const v1::JobEvent& event) {
  std::string line = absl::StrCat(Ts(event.at()), "  ", event.job_id(), "  ", StateName(event.state()));
  if (!event.reason().empty()) absl::StrAppend(&line, "  ", event.reason());
  return line;
}

Table NodesTable(const v1::ListNodesResponse& nodes) {
  Table table({"NODE", "MODEL", "FABRIC", "BACKEND", "STATUS", "GPUS", "IDLE", "SOLD", "OWNER",
               "UNAVAIL", "HOST", "HOST-USED", "HEARTBEAT"});
  for (const v1::Node& n : nodes.nodes()) {
    int idle = 0, sold = 0, owner = 0, unavailable = 0;
    for (const v1::Gpu& g : n.gpus()) {
      switch (g.use()) {
        case v1::GPU_USE_IDLE:
          ++idle;
          break;
        case v1::GPU_USE_SOLD:
          ++sold;
          break;
        case v1::GPU_USE_OWNER_BUSY:
          ++owner;
          break;
        default:
          ++unavailable;
          break;
      }
    }
    const std::string status = n.lost() ? "lost" : n.draining() ? "draining" : n.cordoned() ? "cordoned" : "ready";
    // What the node offers jobs ("-" where its worker did not say).
    std::string host = n.cpu_millis() > 0 ? FormatCpus(n.cpu_millis()) : "-";
    absl::StrAppend(&host, ", ", n.memory_mib() > 0 ? FormatMemoryMib(n.memory_mib()) : "-");
    // What its running jobs hold of it.
    const std::string used = absl::StrCat(FormatCpus(n.cpu_millis_used()), ", ", FormatMemoryMib(n.memory_mib_used()));
    table.AddRow({n.name(), n.gpu_model(), n.fabric(), n.backend(), status,
                  absl::StrCat(n.gpus_size()), absl::StrCat(idle), absl::StrCat(sold),
                  absl::StrCat(owner), absl::StrCat(unavailable), host, used, Ts(n.last_heartbeat())});
  }
  return table;
}

Table GpusTable(const v1::ListNodesResponse& nodes) {
  Table table({"NODE", "GPU", "USE", "UTIL%", "MEM-MIB", "HEALTH", "JOBS"});
  for (const v1::Node& n : nodes.nodes()) {
    for (const v1::Gpu& g : n.gpus()) {
      table.AddRow({n.name(), absl::StrCat(g.index()), GpuUseName(g.use()),
                    absl::StrCat(g.utilization_pct()),
                    absl::StrCat(g.memory_used_mib(), "/", g.memory_total_mib()),
                    g.healthy() ? "ok" : absl::StrCat("unhealthy: ", g.health_reason()),
                    absl::StrJoin(g.job_ids(), ",")});
    }
  }
  return table;
}

Table CapacityTable(const v1::GetCapacityResponse& capacity) {
  Table table({"MODEL", "GPUS", "OWNER-BUSY", "UNAVAIL", "UNITS-OFFERED", "UNITS-SOLD", "CLEARING",
               "RESERVE", "PENDING", "RUNNING", "HOST-CPU-USED", "HOST-MEM-USED"});
  // What the running jobs hold of the host, of what the nodes offer ("-" where no node
  // said).
  auto held = [](int64_t used, int64_t total, std::string (*format)(int64_t)) {
    return absl::StrCat(format(used), " / ", total > 0 ? format(total) : "-");
  };
  for (const v1::PoolCapacity& p : capacity.pools()) {
    table.AddRow({p.gpu_model(), absl::StrCat(p.gpus_total()), absl::StrCat(p.gpus_owner_busy()),
                  absl::StrCat(p.gpus_unavailable()), absl::StrCat(p.units_offered()),
                  absl::StrCat(p.units_sold()),
                  FormatPricePerGpuHour(p.clearing_price_micros_per_gpu_hour()),
                  FormatPricePerGpuHour(p.reserve_price_micros_per_gpu_hour()),
                  absl::StrCat(p.jobs_pending()), absl::StrCat(p.jobs_running()),
                  held(p.cpu_millis_used(), p.cpu_millis_total(), FormatCpus),
                  held(p.memory_mib_used(), p.memory_mib_total(), FormatMemoryMib)});
  }
  return table;
}

Table TenantsTable(const v1::ListTenantsResponse& tenants) {
  Table table({"ID", "NAME", "MAX-GPUS", "MAX-PENDING", "CREATED"});
  for (const v1::Tenant& t : tenants.tenants()) {
    table.AddRow({t.id(), t.display_name(), Limit(t.max_gpus()), Limit(t.max_pending_jobs()),
                  Ts(t.created_at())});
  }
  return table;
}

Details TenantDetails(const v1::Tenant& tenant) {
  return {{"id", tenant.id()},
          {"name", tenant.display_name()},
          {"max gpus", Limit(tenant.max_gpus())},
          {"max pending jobs", Limit(tenant.max_pending_jobs())},
          {"created", Ts(tenant.created_at())}};
}

Table UsageTable(const v1::GetUsageResponse& usage, bool for_csv) {
  if (for_csv) {
    Table table({"tenant_id", "job_id", "gpu_model", "shape", "gpu_ms", "gpu_hours", "records"});
    for (const v1::UsageRow& r : usage.rows()) {
      table.AddRow({r.tenant_id(), r.job_id(), r.gpu_model(), r.shape(), absl::StrCat(r.gpu_ms()),
                    FormatGpuHours(r.gpu_ms()), absl::StrCat(r.records())});
    }
    return table;
  }
  Table table({"TENANT", "JOB", "MODEL", "SHAPE", "GPU-HOURS", "RECORDS"});
  for (const v1::UsageRow& r : usage.rows()) {
    table.AddRow({r.tenant_id(), r.job_id(), r.gpu_model(), r.shape(), FormatGpuHours(r.gpu_ms()),
                  absl::StrCat(r.records())});
  }
  table.AddRow({"TOTAL", "", "", "", FormatGpuHours(usage.total_gpu_ms()), ""});
  return table;
}

Table InvoiceLinesTable(const v1::Invoice& invoice, bool for_csv) {
  if (for_csv) {
    Table table({"tenant_id", "period", "status", "number", "job_id", "gpu_model", "shape", "gpu_ms",
                 "gpu_hours", "average_price_usd_per_gpu_hour", "amount_usd"});
    for (const v1::InvoiceLine& l : invoice.lines()) {
      table.AddRow({invoice.tenant_id(), invoice.period(), InvoiceStatusName(invoice.status()),
                    invoice.number(), l.job_id(), l.gpu_model(), l.shape(), absl::StrCat(l.gpu_ms()),
                    FormatGpuHours(l.gpu_ms()),
                    FormatUsdPlain(l.average_price_micros_per_gpu_hour()),
                    FormatUsdPlain(l.amount_micros())});
    }
    return table;
  }
  Table table({"JOB", "MODEL", "SHAPE", "GPU-HOURS", "AVG-PRICE", "AMOUNT"});
  for (const v1::InvoiceLine& l : invoice.lines()) {
    table.AddRow({l.job_id(), l.gpu_model(), l.shape(), FormatGpuHours(l.gpu_ms()),
                  FormatPricePerGpuHour(l.average_price_micros_per_gpu_hour()),
                  FormatUsd(l.amount_micros())});
  }
  table.AddRow({"TOTAL", "", "", "", "", FormatUsd(invoice.total_micros())});
  return table;
}

Details InvoiceSummary(const v1::Invoice& invoice) {
  return {{"tenant", invoice.tenant_id()},
          {"period", invoice.period()},
          {"status", InvoiceStatusName(invoice.status())},
          {"number", invoice.number()},
          {"finalized", Ts(invoice.finalized_at())},
          {"lines", absl::StrCat(invoice.lines_size())},
          {"total", FormatUsd(invoice.total_micros())}};
}

Table InvoicesTable(const v1::ListInvoicesResponse& invoices, bool for_csv) {
  if (for_csv) {
    Table table({"tenant_id", "period", "status", "number", "total_usd", "finalized_at"});
    for (const v1::Invoice& i : invoices.invoices()) {
      table.AddRow({i.tenant_id(), i.period(), InvoiceStatusName(i.status()), i.number(),
                    FormatUsdPlain(i.total_micros()),
                    i.has_finalized_at() ? Ts(i.finalized_at()) : ""});
    }
    return table;
  }
  Table table({"TENANT", "PERIOD", "STATUS", "NUMBER", "TOTAL", "FINALIZED"});
  for (const v1::Invoice& i : invoices.invoices()) {
    table.AddRow({i.tenant_id(), i.period(), InvoiceStatusName(i.status()), i.number(),
                  FormatUsd(i.total_micros()), Ts(i.finalized_at())});
  }
  return table;
}

}  // namespace surplus::cli
