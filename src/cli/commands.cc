#include "src/cli/commands.h"

#include <algorithm>
#include <chrono>
#include <ostream>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "src/cli/exit_codes.h"
#include "src/cli/parse.h"
#include "src/cli/render.h"
#include "src/cli/views.h"
#include "src/common/crypto.h"
#include "src/common/flags.h"
#include "surplus/gpu_models.h"

namespace surplus::cli {
namespace {

constexpr int kMaxGpusPerNode = 1024;
constexpr int kLogChunkBytes = 1 << 20;
constexpr std::chrono::milliseconds kLogPollInterval{1000};

absl::Status FlagError(absl::string_view flag, const absl::Status& status) {
  return ForFlag(flag, status);
}

absl::StatusOr<int> ParseCount(absl::string_view flag, absl::string_view text, int64_t min,
                               int64_t max) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(text, &v) || v < min || v > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": expected a whole number from ", min, " to ", max, ", got '", text, "'"));
  }
  return static_cast<int>(v);
}

/// Canonical model name when the CLI knows it ("h100" -> "H100-80GB"); otherwise as
/// typed, for the server to judge (it may know models this binary does not).
std::string CanonicalModel(const std::string& name) {
  if (name.empty()) return name;
  const GpuModel* model = FindGpuModel(name);
  return model ? model->name : name;
}

v1::Tier ToProto(Tier tier) { return tier == Tier::kSpot ? v1::TIER_SPOT : v1::TIER_ON_DEMAND; }

}  // namespace

absl::StatusOr<v1::Shape> BuildShape(const ShapeOptions& options) {
  const int given = !options.slice.empty() + !options.gpus.empty() + !options.gang.empty();
  if (given == 0) {
    return absl::InvalidArgumentError("one of --slice, --gpus or --gang is required");
  }
  if (given > 1) {
    return absl::InvalidArgumentError("--slice, --gpus and --gang are mutually exclusive");
  }
  v1::Shape shape;
  if (!options.slice.empty()) {
    if (!IsKnownSliceProfile(options.slice)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--slice: unknown slice profile '", options.slice,
                       "' (e.g. 1g.10gb, 2g.20gb, 3g.40gb, 7g.80gb)"));
    }
    shape.set_slice_profile(options.slice);
  } else if (!options.gpus.empty()) {
    auto n = ParseCount("--gpus", options.gpus, 1, kMaxGpusPerNode);
    if (!n.ok()) return n.status();
    shape.mutable_whole_gpus()->set_count(*n);
  } else {
    auto gang = ParseGang(options.gang);
    if (!gang.ok()) return FlagError("--gang", gang.status());
    shape.mutable_gang()->set_nodes(gang->nodes);
    shape.mutable_gang()->set_gpus_per_node(gang->gpus_per_node);
  }
  if (!options.cpus.empty()) {
    auto cpus = ParseCpuMillis(options.cpus);
    if (!cpus.ok()) return FlagError("--cpus", cpus.status());
    shape.set_cpu_millis(*cpus);
  }
  if (!options.memory.empty()) {
    auto memory = ParseMemoryMib(options.memory);
    if (!memory.ok()) return FlagError("--memory", memory.status());
    shape.set_memory_mib(*memory);
  }
  return shape;
}

absl::StatusOr<v1::JobSpec> BuildJobSpec(const SubmitOptions& options) {
  v1::JobSpec spec;
  auto shape = BuildShape(options.shape);
  if (!shape.ok()) return shape.status();
  *spec.mutable_shape() = *shape;

  auto tier = ParseTier(options.tier);
  if (!tier.ok()) return FlagError("--tier", tier.status());
  spec.set_tier(ToProto(*tier));
  if (!options.bid.empty()) {
    auto bid = ParsePriceMicros(options.bid);
    if (!bid.ok()) return FlagError("--bid", bid.status());
    spec.set_bid_micros_per_gpu_hour(*bid);
  }
  if (*tier == Tier::kSpot && spec.bid_micros_per_gpu_hour() <= 0) {
    return absl::InvalidArgumentError(
        "--bid: a spot job needs a bid above zero, in dollars per GPU-hour (e.g. --bid 2.10)");
  }

  if (!options.max_runtime.empty()) {
    auto ms = ParseDurationMs(options.max_runtime);
    if (!ms.ok()) return FlagError("--max-runtime", ms.status());
    // Whole seconds, rounded up so the job never gets less than asked for.
    spec.set_max_runtime_seconds((*ms + 999) / 1000);
  }
  spec.set_gpu_model(CanonicalModel(options.model));
  spec.set_request_id(options.request_id);
  spec.set_name(options.name);
  spec.set_requeue(options.requeue);

  v1::Workload* workload = spec.mutable_workload();
  if (!options.builtin.empty()) {
    if (!options.argv.empty()) {
      return absl::InvalidArgumentError(
          "--builtin: give either --builtin or a command after '--', not both");
    }
    if (!options.env.empty()) {
      return absl::InvalidArgumentError("--env: applies to commands after '--', not --builtin");
    }
    const std::string kind = absl::AsciiStrToLower(options.builtin);
    v1::BuiltinWorkload* builtin = workload->mutable_builtin();
    if (kind == "sleep") {
      builtin->set_kind(v1::BUILTIN_KIND_SLEEP);
    } else if (kind == "gemm") {
      builtin->set_kind(v1::BUILTIN_KIND_GEMM);
    } else if (kind == "allreduce") {
      builtin->set_kind(v1::BUILTIN_KIND_ALLREDUCE);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--builtin: unknown workload '", options.builtin, "': use sleep, gemm or allreduce"));
    }
    if (options.duration.empty()) {
      return absl::InvalidArgumentError("--duration: required with --builtin (e.g. --duration 10s)");
    }
    auto ms = ParseDurationMs(options.duration);
    if (!ms.ok()) return FlagError("--duration", ms.status());
    if (*ms <= 0) return absl::InvalidArgumentError("--duration: must be above zero");
    builtin->set_duration_ms(*ms);
    for (const std::string& p : options.params) {
      auto kv = ParseKeyValue(p);
      if (!kv.ok()) return FlagError("--param", kv.status());
      (*builtin->mutable_params())[kv->first] = kv->second;
    }
  } else {
    if (options.argv.empty()) {
      return absl::InvalidArgumentError(
          "a workload is required: a command after '--' or --builtin sleep|gemm|allreduce");
    }
    if (!options.duration.empty()) {
      return absl::InvalidArgumentError("--duration: applies only to --builtin");
    }
    if (!options.params.empty()) {
      return absl::InvalidArgumentError("--param: applies only to --builtin");
    }
    v1::ExecWorkload* exec = workload->mutable_exec();
    for (const std::string& a : options.argv) exec->add_argv(a);
    for (const std::string& e : options.env) {
      auto kv = ParseKeyValue(e);
      if (!kv.ok()) return FlagError("--env", kv.status());
      (*exec->mutable_env())[kv->first] = kv->second;
    }
  }
  return spec;
}

absl::StatusOr<std::vector<v1::JobState>> ParseJobStates(const std::vector<std::string>& items) {
  std::vector<v1::JobState> states;
  for (const std::string& item : items) {
    for (absl::string_view part : absl::StrSplit(item, ',', absl::SkipEmpty())) {
      std::string name = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(part));
      if (name.rfind("JOB_STATE_", 0) != 0) name = "JOB_STATE_" + name;
      v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
      if (!v1::JobState_Parse(name, &state) || state == v1::JOB_STATE_UNSPECIFIED) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--state: unknown job state '", part,
            "': use pending, running, succeeded, failed, cancelled, preempted or lost"));
      }
      states.push_back(state);
    }
  }
  return states;
}

namespace {

enum class Format { kTable, kJson, kCsv };

/// Everything the flags write into, and what running a command needs.
struct CliState {
  // Global flags.
  std::string endpoint = "127.0.0.1:50051";
  std::string api_key;
  std::string tls_ca;
  std::string output = "table";
  std::string timeout = "10s";

  // Per-command flags.
  SubmitOptions submit;
  ShapeOptions quote_shape;
  std::string quote_tier = "spot";
  std::string quote_bid;
  std::string quote_model;
  std::string quote_max_runtime;
  std::vector<std::string> job_states;
  std::string tenant;  // --tenant of jobs, usage, invoice, invoices, key issue
  int limit = 100;
  std::string job_id;
  bool follow = false;
  int64_t log_offset = 0;
  int log_attempt = 0;
  bool per_gpu = false;
  std::string tenant_id;
  std::string tenant_name;
  int max_gpus = 0;
  int max_pending_jobs = 0;
  std::string role;
  std::string key_description;
  std::string key_id;
  std::string model;
  std::string price;
  std::string node;
  std::string gpu_list;
  bool release = false;
  bool drain = false;
  std::string period;

  // Set while running.
  Format format = Format::kTable;
  std::unique_ptr<ApiClient> client;
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  int exit_code = kExitOk;  // a command may set a non-zero code without an error status
};

using Action = std::function<absl::Status(CliState&)>;

void Print(CliState& st, const google::protobuf::Message& message, const Table& table) {
  switch (st.format) {
    case Format::kJson:
      *st.out << ToJson(message) << '\n';
      break;
    case Format::kCsv:
      *st.out << table.RenderCsv();
      break;
    case Format::kTable:
      *st.out << table.RenderText();
      break;
  }
}

void Print(CliState& st, const google::protobuf::Message& message, const Details& details) {
  switch (st.format) {
    case Format::kJson:
      *st.out << ToJson(message) << '\n';
      break;
    case Format::kCsv:
      *st.out << DetailsTable(details).RenderCsv();
      break;
    case Format::kTable:
      *st.out << RenderDetailsText(details);
      break;
  }
}

absl::Status RequireTenantId(const std::string& id, absl::string_view flag) {
  return FlagError(flag, ValidateTenantId(id));
}

// --- tenant commands ----------------------------------------------------------

absl::Status RunSubmit(CliState& st) {
  SubmitOptions options = st.submit;
  if (options.request_id.empty()) options.request_id = "req-" + RandomHex(16);
  auto spec = BuildJobSpec(options);
  if (!spec.ok()) return AsUsageError(spec.status());
  v1::SubmitJobRequest req;
  *req.mutable_spec() = *spec;
  auto resp = st.client->SubmitJob(req);
  if (!resp.ok()) return resp.status();
  Details details = JobDetails(resp->job());
  details.emplace_back("new job", resp->created() ? "yes" : "no (request id seen before)");
  Print(st, *resp, details);
  return absl::OkStatus();
}

absl::Status RunQuote(CliState& st) {
  auto shape = BuildShape(st.quote_shape);
  if (!shape.ok()) return AsUsageError(shape.status());
  auto tier = ParseTier(st.quote_tier);
  if (!tier.ok()) return AsUsageError(FlagError("--tier", tier.status()));
  v1::GetQuoteRequest req;
  *req.mutable_shape() = *shape;
  req.set_tier(ToProto(*tier));
  if (!st.quote_bid.empty()) {
    auto bid = ParsePriceMicros(st.quote_bid);
    if (!bid.ok()) return AsUsageError(FlagError("--bid", bid.status()));
    req.set_bid_micros_per_gpu_hour(*bid);
  }
  req.set_gpu_model(CanonicalModel(st.quote_model));
  if (!st.quote_max_runtime.empty()) {
    auto ms = ParseDurationMs(st.quote_max_runtime);
    if (!ms.ok()) return AsUsageError(FlagError("--max-runtime", ms.status()));
    req.set_max_runtime_seconds((*ms + 999) / 1000);
  }
  auto resp = st.client->GetQuote(req);
  if (!resp.ok()) return resp.status();
  Print(st, *resp,
        Details{{"model", resp->gpu_model()},
                {"clearing price now", FormatPricePerGpuHour(resp->current_clearing_price_micros_per_gpu_hour())},
                {"clearing price with it", FormatPricePerGpuHour(resp->clearing_price_micros_per_gpu_hour())},
                {"would start now", resp->would_start_now() ? "yes" : "no"},
                {"would pay", resp->would_start_now() ? FormatPricePerGpuHour(resp->price_micros_per_gpu_hour())
                                                      : std::string("-")},
                {"would preempt", absl::StrCat(resp->would_preempt_jobs(), " running jobs")},
                {"reason", resp->reason()}});
  return absl::OkStatus();
}

absl::Status RunJobs(CliState& st) {
  auto states = ParseJobStates(st.job_states);
  if (!states.ok()) return AsUsageError(states.status());
  if (!st.tenant.empty()) {
    if (auto s = RequireTenantId(st.tenant, "--tenant"); !s.ok()) return AsUsageError(s);
  }
  if (st.limit < 0) return UsageError("--limit: must be 0 (all) or more");
  v1::ListJobsRequest req;
  for (v1::JobState s : *states) req.add_states(s);
  req.set_tenant_id(st.tenant);
  req.set_page_size(st.limit == 0 ? 500 : std::min(st.limit, 500));
  v1::ListJobsResponse all;
  while (true) {
    auto page = st.client->ListJobs(req);
    if (!page.ok()) return page.status();
    for (v1::Job& job : *page->mutable_jobs()) *all.add_jobs() = std::move(job);
    all.set_next_page_token(page->next_page_token());
    if (page->next_page_token().empty()) break;
    if (st.limit > 0 && all.jobs_size() >= st.limit) break;
    req.set_page_token(page->next_page_token());
  }
  if (st.limit > 0 && all.jobs_size() > st.limit) {
    all.mutable_jobs()->DeleteSubrange(st.limit, all.jobs_size() - st.limit);
  }
  std::vector<const v1::Job*> jobs;
  for (const v1::Job& job : all.jobs()) jobs.push_back(&job);
  Print(st, all, JobsTable(jobs));
  return absl::OkStatus();
}

absl::Status RunJob(CliState& st) {
  v1::GetJobRequest req;
  req.set_job_id(st.job_id);
  auto job = st.client->GetJob(req);
  if (!job.ok()) return job.status();
  Print(st, *job, JobDetails(*job));
  return absl::OkStatus();
}

absl::Status RunCancel(CliState& st) {
  v1::CancelJobRequest req;
  req.set_job_id(st.job_id);
  auto job = st.client->CancelJob(req);
  if (!job.ok()) return job.status();
  Print(st, *job, JobDetails(*job));
  return absl::OkStatus();
}

absl::Status RunWatch(CliState& st) {
  v1::WatchJobRequest req;
  req.set_job_id(st.job_id);
  v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
  std::string reason;
  absl::Status status = st.client->WatchJob(req, [&](const v1::JobEvent& event) {
    if (st.format == Format::kJson) {
      *st.out << ToJson(event) << '\n';
    } else {
      *st.out << EventLine(event) << '\n';
    }
    st.out->flush();
    last = event.state();
    reason = event.reason();
    return !IsTerminal(last);
  });
  if (!status.ok()) return status;
  if (!IsTerminal(last)) {
    // The stream ended early (e.g. the serving replica went away): ask once more.
    v1::GetJobRequest get;
    get.set_job_id(st.job_id);
    auto job = st.client->GetJob(get);
    if (!job.ok()) return job.status();
    if (!IsTerminal(job->state())) {
      return absl::UnavailableError(absl::StrCat("the watch stream ended while job ", st.job_id,
                                                 " is still ", StateName(job->state())));
    }
    last = job->state();
    reason = job->reason();
  }
  if (last != v1::JOB_STATE_SUCCEEDED) {
    *st.err << "surplus: error: job " << st.job_id << " ended " << StateName(last)
            << (reason.empty() ? "" : ": ") << reason << '\n';
    st.exit_code = kExitJobNotSucceeded;
  }
  return absl::OkStatus();
}

absl::Status RunLogs(CliState& st) {
  if (st.log_offset < 0) return UsageError("--offset: must be 0 or more");
  if (st.log_attempt < 0) return UsageError("--attempt: must be 0 (the latest) or more");
  v1::GetJobLogRequest req;
  req.set_job_id(st.job_id);
  req.set_offset(st.log_offset);
  req.set_max_bytes(kLogChunkBytes);
  req.set_attempt(st.log_attempt);
  bool job_ended = false;
  while (true) {
    auto chunk = st.client->GetJobLog(req);
    if (!chunk.ok()) return chunk.status();
    req.set_attempt(chunk->attempt());  // offsets belong to one attempt's log
    if (st.format == Format::kJson) {
      *st.out << ToJson(*chunk) << '\n';
    } else {
      st.out->write(chunk->data().data(), static_cast<std::streamsize>(chunk->data().size()));
    }
    st.out->flush();
    const bool advanced = chunk->next_offset() > req.offset();
    req.set_offset(chunk->next_offset());
    if (!chunk->eof() && advanced) continue;
    // Caught up with what is stored.
    if (!st.follow || job_ended) break;
    v1::GetJobRequest get;
    get.set_job_id(st.job_id);
    auto job = st.client->GetJob(get);
    if (!job.ok()) return job.status();
    if (IsTerminal(job->state())) {
      job_ended = true;  // one more pass picks up the last lines
      continue;
    }
    if (chunk->eof()) {
      // This attempt is over and the job was requeued: its next run has its own log.
      *st.err << "surplus: attempt " << chunk->attempt() << " ended and the job was requeued; its next run: "
              << "surplus logs " << st.job_id << " --attempt " << chunk->attempt() + 1 << "\n";
      break;
    }
    std::this_thread::sleep_for(kLogPollInterval);
  }
  return absl::OkStatus();
}

// --- operator commands --------------------------------------------------------

absl::Status RunNodes(CliState& st) {
  auto resp = st.client->ListNodes(v1::ListNodesRequest());
  if (!resp.ok()) return resp.status();
  Print(st, *resp, st.per_gpu ? GpusTable(*resp) : NodesTable(*resp));
  return absl::OkStatus();
}

absl::Status RunCapacity(CliState& st) {
  auto resp = st.client->GetCapacity(v1::GetCapacityRequest());
  if (!resp.ok()) return resp.status();
  Print(st, *resp, CapacityTable(*resp));
  return absl::OkStatus();
}

absl::Status RunTenantCreate(CliState& st) {
  if (auto s = ValidateTenantId(st.tenant_id); !s.ok()) return AsUsageError(s);
  if (st.max_gpus < 0) return UsageError("--max-gpus: must be 0 (unlimited) or more");
  if (st.max_pending_jobs < 0) {
    return UsageError("--max-pending-jobs: must be 0 (unlimited) or more");
  }
  v1::CreateTenantRequest req;
  req.set_id(st.tenant_id);
  req.set_display_name(st.tenant_name);
  req.set_max_gpus(st.max_gpus);
  req.set_max_pending_jobs(st.max_pending_jobs);
  auto tenant = st.client->CreateTenant(req);
  if (!tenant.ok()) return tenant.status();
  Print(st, *tenant, TenantDetails(*tenant));
  return absl::OkStatus();
}

absl::Status RunTenants(CliState& st) {
  auto resp = st.client->ListTenants(v1::ListTenantsRequest());
  if (!resp.ok()) return resp.status();
  Print(st, *resp, TenantsTable(*resp));
  return absl::OkStatus();
}

absl::Status RunKeyIssue(CliState& st) {
  v1::IssueApiKeyRequest req;
  const std::string role = absl::AsciiStrToLower(st.role);
  if (role == "tenant") {
    req.set_role(v1::ROLE_TENANT);
  } else if (role == "operator") {
    req.set_role(v1::ROLE_OPERATOR);
  } else if (role == "finance") {
    req.set_role(v1::ROLE_FINANCE);
  } else if (role == "worker") {
    req.set_role(v1::ROLE_WORKER);
  } else {
    return UsageError(absl::StrCat("--role: unknown role '", st.role,
                                   "': use tenant, operator, finance or worker"));
  }
  if (req.role() == v1::ROLE_TENANT) {
    if (st.tenant.empty()) return UsageError("--tenant: required with --role tenant");
    if (auto s = RequireTenantId(st.tenant, "--tenant"); !s.ok()) return AsUsageError(s);
  } else if (!st.tenant.empty()) {
    return UsageError("--tenant: applies only to --role tenant");
  }
  req.set_tenant_id(st.tenant);
  req.set_description(st.key_description);
  auto resp = st.client->IssueApiKey(req);
  if (!resp.ok()) return resp.status();
  Print(st, *resp,
        Details{{"key id", resp->key_id()},
                {"api key", resp->api_key()},
                {"role", RoleName(resp->role())},
                {"tenant", resp->tenant_id()}});
  if (st.format == Format::kTable) {
    *st.err << "surplus: note: the API key is shown only this once; store it now\n";
  }
  return absl::OkStatus();
}

absl::Status RunKeyRevoke(CliState& st) {
  v1::RevokeApiKeyRequest req;
  req.set_key_id(st.key_id);
  auto resp = st.client->RevokeApiKey(req);
  if (!resp.ok()) return resp.status();
  Print(st, *resp,
        Details{{"key id", st.key_id},
                {"revoked", resp->revoked() ? "yes" : "no (already revoked)"}});
  return absl::OkStatus();
}

absl::Status RunReservePrice(CliState& st) {
  auto price = ParsePriceMicros(st.price);
  if (!price.ok()) return AsUsageError(FlagError("--price", price.status()));
  v1::SetReservePriceRequest req;
  req.set_gpu_model(CanonicalModel(st.model));
  req.set_reserve_micros_per_gpu_hour(*price);
  auto resp = st.client->SetReservePrice(req);
  if (!resp.ok()) return resp.status();
  Print(st, *resp,
        Details{{"model", resp->gpu_model()},
                {"reserve price", FormatPricePerGpuHour(resp->reserve_micros_per_gpu_hour())}});
  return absl::OkStatus();
}

absl::Status RunCordon(CliState& st, bool cordoned) {
  v1::CordonNodeRequest req;
  req.set_node(st.node);
  req.set_cordoned(cordoned);
  req.set_drain(cordoned && st.drain);
  auto node = st.client->CordonNode(req);
  if (!node.ok()) return node.status();
  v1::ListNodesResponse one;
  *one.add_nodes() = *node;
  if (st.format == Format::kJson) {
    *st.out << ToJson(*node) << '\n';
  } else {
    Print(st, one, NodesTable(one));
  }
  return absl::OkStatus();
}

absl::Status RunReclaim(CliState& st) {
  v1::ReclaimCapacityRequest req;
  req.set_node(st.node);
  req.set_action(st.release ? v1::RECLAIM_ACTION_RELEASE : v1::RECLAIM_ACTION_RECLAIM);
  if (!st.gpu_list.empty()) {
    auto indices = ParseIndexList(st.gpu_list);
    if (!indices.ok()) return AsUsageError(FlagError("--gpus", indices.status()));
    for (int i : *indices) req.add_gpu_indices(i);
  }
  auto resp = st.client->ReclaimCapacity(req);
  if (!resp.ok()) return resp.status();
  const std::string gpus = st.gpu_list.empty() ? "all" : st.gpu_list;
  Print(st, *resp,
        Details{{"node", st.node},
                {"gpus", gpus},
                {"action", st.release ? "released to the harvest pool" : "reclaimed by the owner"},
                {"preempted jobs", absl::StrJoin(resp->preempted_job_ids(), ",")}});
  return absl::OkStatus();
}

// --- finance commands ---------------------------------------------------------

absl::Status CheckPeriodAndTenant(const CliState& st, bool tenant_required) {
  if (auto s = ValidatePeriod(st.period); !s.ok()) return AsUsageError(FlagError("--period", s));
  if (tenant_required && st.tenant.empty()) return UsageError("--tenant: required");
  if (!st.tenant.empty()) {
    if (auto s = RequireTenantId(st.tenant, "--tenant"); !s.ok()) return AsUsageError(s);
  }
  return absl::OkStatus();
}

absl::Status RunUsage(CliState& st) {
  if (auto s = CheckPeriodAndTenant(st, false); !s.ok()) return s;
  v1::GetUsageRequest req;
  req.set_tenant_id(st.tenant);
  req.set_period(st.period);
  auto resp = st.client->GetUsage(req);
  if (!resp.ok()) return resp.status();
  Print(st, *resp, UsageTable(*resp, st.format == Format::kCsv));
  return absl::OkStatus();
}

void PrintInvoice(CliState& st, const v1::Invoice& invoice) {
  switch (st.format) {
    case Format::kJson:
      *st.out << ToJson(invoice) << '\n';
      break;
    case Format::kCsv:
      *st.out << InvoiceLinesTable(invoice, true).RenderCsv();
      break;
    case Format::kTable:
      *st.out << RenderDetailsText(InvoiceSummary(invoice)) << '\n'
              << InvoiceLinesTable(invoice, false).RenderText();
      break;
  }
}

absl::Status RunInvoice(CliState& st) {
  if (st.period.empty()) return UsageError("--period: required (YYYY-MM)");
  if (auto s = CheckPeriodAndTenant(st, true); !s.ok()) return s;
  v1::GetInvoiceRequest req;
  req.set_tenant_id(st.tenant);
  req.set_period(st.period);
  auto invoice = st.client->GetInvoice(req);
  if (!invoice.ok()) return invoice.status();
  PrintInvoice(st, *invoice);
  return absl::OkStatus();
}

absl::Status RunInvoiceFinalize(CliState& st) {
  if (auto s = CheckPeriodAndTenant(st, true); !s.ok()) return s;
  v1::FinalizeInvoiceRequest req;
  req.set_tenant_id(st.tenant);
  req.set_period(st.period);
  auto invoice = st.client->FinalizeInvoice(req);
  if (!invoice.ok()) return invoice.status();
  PrintInvoice(st, *invoice);
  return absl::OkStatus();
}

absl::Status RunInvoices(CliState& st) {
  if (!st.tenant.empty()) {
    if (auto s = RequireTenantId(st.tenant, "--tenant"); !s.ok()) return AsUsageError(s);
  }
  v1::ListInvoicesRequest req;
  req.set_tenant_id(st.tenant);
  auto resp = st.client->ListInvoices(req);
  if (!resp.ok()) return resp.status();
  Print(st, *resp, InvoicesTable(*resp, st.format == Format::kCsv));
  return absl::OkStatus();
}

// --- the command tree -----------------------------------------------------------

constexpr char kDescription[] =
    "surplus: buy and manage idle GPU capacity.\n"
    "Connects to --endpoint (default 127.0.0.1:50051) with --api-key; every long flag\n"
    "--some-name can also be set as SURPLUS_SOME_NAME (SURPLUS_ENDPOINT, SURPLUS_API_KEY).";

constexpr char kSubmitFooter[] =
    "Examples:\n"
    "  surplus submit --gpus 1 --bid 2.10 --max-runtime 30m -- python train.py\n"
    "  surplus submit --slice 1g.10gb --tier on-demand --builtin sleep --duration 10s\n"
    "Retries: --request-id makes a submit idempotent (the same id returns the same job).\n"
    "It defaults to a fresh random id, so scripts that may retry should pass their own.";

struct Command {
  CLI::App* app;
  Action action;
};

CLI::App* AddCommand(CLI::App& parent, std::vector<Command>& commands, const std::string& name,
                     const std::string& description, Action action) {
  CLI::App* sub = parent.add_subcommand(name, description);
  sub->fallthrough();
  if (action) commands.push_back({sub, std::move(action)});
  return sub;
}

void AddShapeFlags(CLI::App* sub, ShapeOptions& shape) {
  sub->add_option("--slice", shape.slice, "one slice of this profile, e.g. 1g.10gb");
  sub->add_option("--gpus", shape.gpus, "N whole GPUs on one node");
  sub->add_option("--gang", shape.gang, "K nodes x N GPUs, all or nothing, e.g. 2x8");
  sub->add_option("--cpus", shape.cpus,
                  "host CPUs on each node, e.g. 4 or 0.5 (default: the node's CPUs in proportion to the GPUs)");
  sub->add_option("--memory", shape.memory,
                  "host memory on each node, e.g. 64Gi (default: in proportion to the GPUs)");
}

std::vector<Command> BuildApp(CLI::App& app, CliState& st) {
  std::vector<Command> commands;
  app.require_subcommand(1);
  app.footer(kExitCodeHelp);
  app.add_option("--endpoint", st.endpoint, "control plane host:port")->capture_default_str();
  app.add_option("--api-key", st.api_key, "API key (sent as a bearer token)");
  app.add_option("--tls-ca", st.tls_ca, "CA bundle to verify the server with TLS (default: plaintext)");
  app.add_option("-o,--output", st.output, "table, json (protobuf JSON) or csv")
      ->check(CLI::IsMember({"table", "json", "csv"}))
      ->capture_default_str();
  app.add_option("--timeout", st.timeout, "deadline of each call, e.g. 10s")->capture_default_str();

  // Tenants.
  CLI::App* submit = AddCommand(app, commands, "submit", "submit a job", RunSubmit);
  submit->footer(kSubmitFooter);
  AddShapeFlags(submit, st.submit.shape);
  submit->add_option("--tier", st.submit.tier, "spot or on-demand")->capture_default_str();
  submit->add_option("--bid", st.submit.bid, "spot: most you pay, dollars per GPU-hour, e.g. 2.10");
  submit->add_option("--max-runtime", st.submit.max_runtime, "stop the job after this, e.g. 30m");
  submit->add_option("--model", st.submit.model, "GPU model, e.g. H100-80GB (default: any)");
  submit->add_option("--request-id", st.submit.request_id,
                     "idempotency key (default: random; pass your own to retry safely)");
  submit->add_option("--name", st.submit.name, "job name");
  submit->add_flag("--requeue", st.submit.requeue, "requeue instead of ending when preempted");
  submit->add_option("--env", st.submit.env, "KEY=VALUE for the command (repeatable)")
      ->allow_extra_args(false);
  submit->add_option("--builtin", st.submit.builtin, "built-in workload: sleep, gemm or allreduce");
  submit->add_option("--duration", st.submit.duration, "built-in workload run time, e.g. 10s");
  submit->add_option("--param", st.submit.params, "KEY=VALUE for the built-in (repeatable)")
      ->allow_extra_args(false);
  submit->add_option("command", st.submit.argv, "the command to run, after --");

  CLI::App* jobs = AddCommand(app, commands, "jobs", "list jobs", RunJobs);
  jobs->add_option("--state", st.job_states, "only these states, e.g. running,pending")
      ->allow_extra_args(false);
  jobs->add_option("--tenant", st.tenant, "operators: one tenant's jobs");
  jobs->add_option("--limit", st.limit, "at most this many jobs (0 = all)")->capture_default_str();

  CLI::App* job = AddCommand(app, commands, "job", "show one job", RunJob);
  job->add_option("id", st.job_id, "job id")->required();
  CLI::App* cancel = AddCommand(app, commands, "cancel", "cancel a job", RunCancel);
  cancel->add_option("id", st.job_id, "job id")->required();
  CLI::App* watch = AddCommand(app, commands, "watch",
                               "print a job's state changes until it ends; exit 0 only if it "
                               "SUCCEEDED, 7 if it ended otherwise",
                               RunWatch);
  watch->add_option("id", st.job_id, "job id")->required();
  CLI::App* logs = AddCommand(app, commands, "logs", "print a job's output", RunLogs);
  logs->add_option("id", st.job_id, "job id")->required();
  logs->add_flag("-f,--follow", st.follow, "keep printing until the job ends");
  logs->add_option("--offset", st.log_offset, "start at this byte");
  logs->add_option("--attempt", st.log_attempt, "which run of the job (default: the latest)");

  CLI::App* quote = AddCommand(app, commands, "quote", "price and start chance for a shape", RunQuote);
  AddShapeFlags(quote, st.quote_shape);
  quote->add_option("--tier", st.quote_tier, "spot or on-demand")->capture_default_str();
  quote->add_option("--bid", st.quote_bid, "spot bid, dollars per GPU-hour");
  quote->add_option("--model", st.quote_model, "GPU model (default: any)");
  quote->add_option("--max-runtime", st.quote_max_runtime, "the job's run time limit, e.g. 30m (default: none)");

  // Operators.
  CLI::App* nodes = AddCommand(app, commands, "nodes", "list nodes", RunNodes);
  nodes->add_flag("--per-gpu", st.per_gpu, "one row per GPU");
  AddCommand(app, commands, "capacity", "capacity and prices per GPU model", RunCapacity);

  CLI::App* tenant = AddCommand(app, commands, "tenant", "manage tenants", nullptr);
  tenant->require_subcommand(1);
  CLI::App* create = AddCommand(*tenant, commands, "create", "create a tenant", RunTenantCreate);
  create->add_option("id", st.tenant_id, "tenant id: lower-case letters, digits, '-'")->required();
  create->add_option("--name", st.tenant_name, "display name");
  create->add_option("--max-gpus", st.max_gpus, "GPU quota (0 = unlimited)");
  create->add_option("--max-pending-jobs", st.max_pending_jobs, "pending job quota (0 = unlimited)");
  AddCommand(app, commands, "tenants", "list tenants", RunTenants);

  CLI::App* key = AddCommand(app, commands, "key", "manage API keys", nullptr);
  key->require_subcommand(1);
  CLI::App* issue = AddCommand(*key, commands, "issue", "issue an API key", RunKeyIssue);
  issue->add_option("--role", st.role, "tenant, operator, finance or worker")->required();
  issue->add_option("--tenant", st.tenant, "the tenant (with --role tenant)");
  issue->add_option("--description", st.key_description, "what the key is for");
  CLI::App* revoke = AddCommand(*key, commands, "revoke", "revoke an API key", RunKeyRevoke);
  revoke->add_option("key_id", st.key_id, "key id")->required();

  CLI::App* reserve =
      AddCommand(app, commands, "reserve-price", "set a model's reserve price", RunReservePrice);
  reserve->add_option("--model", st.model, "GPU model, e.g. H100-80GB")->required();
  reserve->add_option("--price", st.price, "dollars per GPU-hour, e.g. 1.50")->required();

  CLI::App* cordon = AddCommand(app, commands, "cordon", "stop placing jobs on a node",
                                [](CliState& s) { return RunCordon(s, true); });
  cordon->add_option("node", st.node, "node name")->required();
  cordon->add_flag("--drain", st.drain, "also give the node's running jobs a preemption notice");
  CLI::App* uncordon = AddCommand(app, commands, "uncordon", "place jobs on a node again",
                                  [](CliState& s) { return RunCordon(s, false); });
  uncordon->add_option("node", st.node, "node name")->required();
  CLI::App* reclaim = AddCommand(app, commands, "reclaim",
                                 "the owner takes GPUs back (tenant jobs get a preemption notice)",
                                 RunReclaim);
  reclaim->add_option("node", st.node, "node name")->required();
  reclaim->add_option("--gpus", st.gpu_list, "GPU indices, e.g. 0,1 (default: all)");
  reclaim->add_flag("--release", st.release, "hand the GPUs back to the harvest pool instead");

  // Finance.
  CLI::App* usage = AddCommand(app, commands, "usage", "GPU usage for a month", RunUsage);
  usage->add_option("--tenant", st.tenant, "one tenant (default: all you may see)");
  usage->add_option("--period", st.period, "month, YYYY-MM (UTC)")->required();
  CLI::App* invoice = AddCommand(app, commands, "invoice", "show a tenant's invoice", RunInvoice);
  invoice->add_option("--tenant", st.tenant, "tenant id");
  invoice->add_option("--period", st.period, "month, YYYY-MM (UTC)");
  CLI::App* finalize =
      AddCommand(*invoice, commands, "finalize", "finalize (number and freeze) an invoice",
                 RunInvoiceFinalize);
  finalize->add_option("--tenant", st.tenant, "tenant id")->required();
  finalize->add_option("--period", st.period, "month, YYYY-MM (UTC)")->required();
  CLI::App* invoices = AddCommand(app, commands, "invoices", "list invoices", RunInvoices);
  invoices->add_option("--tenant", st.tenant, "one tenant (default: all you may see)");
  return commands;
}

}  // namespace

int RunCli(const std::vector<std::string>& args, const ClientFactory& connect, std::ostream& out,
           std::ostream& err) {
  CliState st;
  st.out = &out;
  st.err = &err;
  CLI::App app(kDescription, "surplus");
  std::vector<Command> commands = BuildApp(app, st);
  BindEnvironment(app);

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      return app.exit(e, out, err);  // --help
    }
    err << ErrorLine(UsageError(absl::StrCat(e.what(), " (see --help)"))) << '\n';
    return kExitUsage;
  }

  // The deepest command given wins (`invoice finalize` over `invoice`).
  const Command* chosen = nullptr;
  for (const Command& c : commands) {
    if (c.app->parsed()) chosen = &c;
  }
  if (chosen == nullptr) {
    err << ErrorLine(UsageError("no command given (see --help)")) << '\n';
    return kExitUsage;
  }

  st.format = st.output == "json" ? Format::kJson
              : st.output == "csv" ? Format::kCsv
                                   : Format::kTable;
  auto timeout_ms = ParseDurationMs(st.timeout);
  if (!timeout_ms.ok()) {
    err << ErrorLine(AsUsageError(ForFlag("--timeout", timeout_ms.status()))) << '\n';
    return kExitUsage;
  }
  if (st.api_key.empty()) {
    err << ErrorLine(UsageError("no API key: pass --api-key or set SURPLUS_API_KEY")) << '\n';
    return kExitUsage;
  }
  ConnectionOptions connection;
  connection.endpoint = st.endpoint;
  connection.api_key = st.api_key;
  connection.tls_ca_file = st.tls_ca;
  connection.call_timeout = std::chrono::milliseconds(*timeout_ms);
  st.client = connect(connection);
  if (st.client == nullptr) {
    err << ErrorLine(absl::UnavailableError(absl::StrCat("cannot connect to ", st.endpoint)))
        << '\n';
    return kExitUnavailable;
  }

  absl::Status status = chosen->action(st);
  out.flush();
  if (!status.ok()) {
    err << ErrorLine(status) << '\n';
    return ExitCodeFor(status);
  }
  return st.exit_code;
}

}  // namespace surplus::cli
