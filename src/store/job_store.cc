#include "src/store/job_store.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "src/common/crypto.h"
#include "src/common/grpc_util.h"
#include "surplus/gpu_models.h"

namespace surplus::store {
namespace v1 = surplus::v1;

namespace {

// The placements of job j's current attempt, as "node|indices|profile|start;..."
// (ParsePlacements reads it back).
#define SURPLUS_PLACEMENTS_SQL                                                            \
  " (SELECT string_agg(p.node || '|' || p.gpu_indices || '|' || p.slice_profile || '|' ||" \
  "   p.slot_start, ';' ORDER BY p.node) FROM job_placements p"                           \
  "   WHERE p.job_id = j.id AND p.attempt = j.attempt)"

// What ShownReason needs to render an outbid job's reason with its pool's current price.
#define SURPLUS_OUTBID_SQL                                                                 \
  " j.outbid_model, j.bid_micros,"                                                        \
  " (SELECT m.clearing_micros FROM market_rounds m WHERE m.gpu_model = j.outbid_model"       \
  "   ORDER BY m.id DESC LIMIT 1)"

// Column list every job read uses; FillJob reads them by position.
constexpr char kJobColumns[] =
    "j.id, j.tenant_id, j.spec_json, j.state, j.reason, j.exit_code, j.created_ms, j.started_ms,"
    " j.finished_ms, j.price_micros, j.assigned_model, j.attempt, j.seq,"
    SURPLUS_PLACEMENTS_SQL " AS placements," SURPLUS_OUTBID_SQL;

// The GPU indices of a comma-separated list ("0,1,2").
std::vector<int> ParseIndices(absl::string_view text) {
  std::vector<int> out;
  for (absl::string_view idx : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int i = 0;
    if (absl::SimpleAtoi(idx, &i)) out.push_back(i);
  }
  return out;
}

// Appends the GPU indices of a comma-separated list to `p`.
void AddIndices(absl::string_view text, v1::Placement* p) {
  for (int i : ParseIndices(text)) p->add_gpu_indices(i);
}

void ParsePlacements(const std::string& text, google::protobuf::RepeatedPtrField<v1::Placement>* out) {
  if (text.empty()) return;
  for (absl::string_view part : absl::StrSplit(text, ';')) {
    std::vector<std::string> f = absl::StrSplit(part, '|');
    if (f.size() != 4) continue;
    v1::Placement* p = out->Add();
    p->set_node(f[0]);
    AddIndices(f[1], p);
    p->set_slice_profile(f[2]);
    int start = 0;
    if (absl::SimpleAtoi(f[3], &start)) p->set_slot_start(start);
  }
}

// The reason a job shows: the stored one, except that a pending job outbid in a pool quotes
// the pool's clearing price as it is now (the stored text quotes the price of the round
// that last reported the job). Columns: state, reason, and SURPLUS_OUTBID_SQL's three
// from `outbid`.
std::string ShownReason(const pqxx::row& r, int state, int reason, int outbid) {
  if (r[state].as<std::string>() == "PENDING" && !r[outbid].as<std::string>().empty() &&
      !r[outbid + 2].is_null()) {
    const Micros bid = r[outbid + 1].as<int64_t>();
    const Micros clearing = r[outbid + 2].as<int64_t>();
    if (clearing > bid) return scheduler::OutbidReason(clearing, bid);
  }
  return r[reason].as<std::string>();
}

void FillJob(const pqxx::row& r, v1::Job* job) {
  job->set_id(r[0].as<std::string>());
  job->set_tenant_id(r[1].as<std::string>());
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  (void)google::protobuf::util::JsonStringToMessage(r[2].as<std::string>(), job->mutable_spec(), opts);
  job->set_state(StateFromName(r[3].as<std::string>()));
  job->set_reason(ShownReason(r, 3, 4, 14));
  if (!r[5].is_null()) {
    job->set_has_exit_code(true);
    job->set_exit_code(r[5].as<int>());
  }
  SetTimestampMs(r[6].as<int64_t>(), job->mutable_created_at());
  if (!r[7].is_null()) SetTimestampMs(r[7].as<int64_t>(), job->mutable_started_at());
  if (!r[8].is_null()) SetTimestampMs(r[8].as<int64_t>(), job->mutable_finished_at());
  job->set_price_micros_per_gpu_hour(r[9].as<int64_t>());
  job->set_gpu_model(r[10].as<std::string>());
  job->set_attempt(r[11].as<int>());
  if (!r[13].is_null()) ParsePlacements(r[13].as<std::string>(), job->mutable_placements());
}

std::string ShapeKind(const v1::Shape& s) {
  switch (s.kind_case()) {
    case v1::Shape::kSliceProfile: return "slice";
    case v1::Shape::kGang: return "gang";
    default: return "gpus";
  }
}

void AddEvent(pqxx::work& tx, const std::string& job_id, int64_t at_ms, const std::string& state,
              const std::string& reason) {
  tx.exec_prepared("job_event", job_id, at_ms, state, reason);
}

std::string JoinInts(const std::vector<int>& v) { return absl::StrJoin(v, ","); }

constexpr char kNewJobReason[] = "waiting for the next scheduling round";

// Many jobs in one statement: one array per column, one element per job.
constexpr char kInsertJobsBulk[] =
    "WITH j AS ("
    " INSERT INTO jobs (id, tenant_id, request_id, name, spec_json, shape_kind, slice_profile,"
    "  gpus_per_node, node_count, tier, bid_micros, gpu_model, max_runtime_ms, requeue, state,"
    "  reason, created_ms, cpu_millis, memory_mib)"
    " SELECT id, tenant_id, request_id, name, spec_json, shape_kind, slice_profile, gpus_per_node,"
    "  node_count, tier, bid_micros, gpu_model, max_runtime_ms, requeue, 'PENDING',"
    "  'waiting for the next scheduling round', created_ms, cpu_millis, memory_mib"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],"
    "  $8::int[], $9::int[], $10::text[], $11::bigint[], $12::text[], $13::bigint[], $14::bool[],"
    "  $15::bigint[], $16::bigint[], $17::bigint[]) AS v(id, tenant_id, request_id, name, spec_json,"
    "  shape_kind, slice_profile, gpus_per_node, node_count, tier, bid_micros, gpu_model,"
    "  max_runtime_ms, requeue, created_ms, cpu_millis, memory_mib)"
    " ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING id, created_ms),"
    " e AS (INSERT INTO job_events (job_id, at_ms, state, reason)"
    "  SELECT id, created_ms, 'PENDING', 'submitted' FROM j)"
    " SELECT id FROM j";


constexpr char kInsertJob[] =
    "WITH j AS ("
    " INSERT INTO jobs (id, tenant_id, request_id, name, spec_json, shape_kind, slice_profile,"
    "  gpus_per_node, node_count, tier, bid_micros, gpu_model, max_runtime_ms, requeue, state,"
    "  reason, created_ms, cpu_millis, memory_mib)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'PENDING',"
    "  'waiting for the next scheduling round', $15, $16, $17)"
    " ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING id, created_ms),"
    " e AS (INSERT INTO job_events (job_id, at_ms, state, reason)"
    "  SELECT id, created_ms, 'PENDING', 'submitted' FROM j)"
    " SELECT id FROM j";

}  // namespace

std::string StateName(v1::JobState s) {
  switch (s) {
    case v1::JOB_STATE_PENDING: return "PENDING";
    case v1::JOB_STATE_RUNNING: return "RUNNING";
    case v1::JOB_STATE_SUCCEEDED: return "SUCCEEDED";
    case v1::JOB_STATE_FAILED: return "FAILED";
    case v1::JOB_STATE_CANCELLED: return "CANCELLED";
    case v1::JOB_STATE_PREEMPTED: return "PREEMPTED";
    case v1::JOB_STATE_LOST: return "LOST";
    default: return "";
  }
}

v1::JobState StateFromName(const std::string& s) {
  if (s == "PENDING") return v1::JOB_STATE_PENDING;
  if (s == "RUNNING") return v1::JOB_STATE_RUNNING;
  if (s == "SUCCEEDED") return v1::JOB_STATE_SUCCEEDED;
  if (s == "FAILED") return v1::JOB_STATE_FAILED;
  if (s == "CANCELLED") return v1::JOB_STATE_CANCELLED;
  if (s == "PREEMPTED") return v1::JOB_STATE_PREEMPTED;
  if (s == "LOST") return v1::JOB_STATE_LOST;
  return v1::JOB_STATE_UNSPECIFIED;
}

bool IsTerminal(v1::JobState s) {
  return s != v1::JOB_STATE_PENDING && s != v1::JOB_STATE_RUNNING && s != v1::JOB_STATE_UNSPECIFIED;
}

PgJobStore::PgJobStore(PgPool& pool) : pool_(pool) {
  pool_.AddPrepared("insert_job", kInsertJob);
  pool_.AddPrepared("job_event",
                    "INSERT INTO job_events (job_id, at_ms, state, reason) VALUES ($1, $2, $3, $4)");
  pool_.AddPrepared("job_by_request", absl::StrCat("SELECT ", kJobColumns,
                                                   " FROM jobs j WHERE j.tenant_id = $1 AND j.request_id = $2"));
  pool_.AddPrepared("job_by_id", absl::StrCat("SELECT ", kJobColumns, " FROM jobs j WHERE j.id = $1"));
  // Pending jobs are counted only for tenants that have a pending-jobs quota.
  pool_.AddPrepared("tenant_pending_quota",
                    "SELECT t.max_pending_jobs, CASE WHEN t.max_pending_jobs > 0 THEN (SELECT count(*)"
                    " FROM jobs WHERE tenant_id = t.id AND state = 'PENDING') ELSE 0 END"
                    " FROM tenants t WHERE t.id = $1");
  pool_.AddPrepared("insert_jobs_bulk", kInsertJobsBulk);
}

std::vector<SubmitOutcome> PgJobStore::SubmitBatch(const std::vector<SubmitItem>& items) {
  std::vector<SubmitOutcome> out(items.size());
  // The reply for a job just inserted, built from what was written.
  auto FillNew = [](const std::string& id, const SubmitItem& it, SubmitOutcome* o) {
    o->created = true;
    o->job.set_id(id);
    o->job.set_tenant_id(it.tenant_id);
    *o->job.mutable_spec() = it.spec;
    o->job.set_state(v1::JOB_STATE_PENDING);
    o->job.set_reason(kNewJobReason);
    SetTimestampMs(it.now_ms, o->job.mutable_created_at());
  };
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    std::map<std::string, std::pair<int64_t, int64_t>> quota;  // tenant -> (max, pending)
    std::vector<size_t> bulk;                 // items inserted by the one bulk statement
    std::vector<std::vector<std::string>> cols(17);
    for (size_t i = 0; i < items.size(); ++i) {
      const SubmitItem& it = items[i];
      SubmitOutcome& o = out[i];
      o = SubmitOutcome{};
      const v1::JobSpec& spec = it.spec;
      auto q = quota.find(it.tenant_id);
      if (q == quota.end()) {
        auto r = tx.exec_prepared("tenant_pending_quota", it.tenant_id);
        if (r.empty()) {
          o.status = absl::FailedPreconditionError(absl::StrCat("tenant '", it.tenant_id, "' does not exist"));
          continue;
        }
        q = quota.emplace(it.tenant_id, std::make_pair(r[0][0].as<int64_t>(), r[0][1].as<int64_t>())).first;
      }
      std::string spec_json;
      (void)google::protobuf::util::MessageToJsonString(spec, &spec_json);
      const v1::Shape& shape = spec.shape();
      int gpus = shape.has_whole_gpus() ? shape.whole_gpus().count()
                                        : (shape.has_gang() ? shape.gang().gpus_per_node() : 0);
      int node_count = shape.has_gang() ? shape.gang().nodes() : 1;
      const bool limited = q->second.first > 0;
      if (limited) {
        // The pending-jobs quota applies to new request ids only.
        auto existing = tx.exec_prepared("job_by_request", it.tenant_id, spec.request_id());
        if (!existing.empty()) {
          FillJob(existing[0], &o.job);
          continue;
        }
        if (q->second.second >= q->second.first) {
          o.status = absl::ResourceExhaustedError(absl::StrCat(
              "over quota: tenant '", it.tenant_id, "' has ", q->second.second,
              " pending jobs (max ", q->second.first, ")"));
          continue;
        }
      }
      const std::string id = absl::StrCat("job-", RandomHex(8));
      const std::string tier = spec.tier() == v1::TIER_ON_DEMAND ? "on_demand" : "spot";
      if (!limited) {
        bulk.push_back(i);
        cols[0].push_back(id);
        cols[1].push_back(it.tenant_id);
        cols[2].push_back(spec.request_id());
        cols[3].push_back(spec.name());
        cols[4].push_back(spec_json);
        cols[5].push_back(ShapeKind(shape));
        cols[6].push_back(shape.slice_profile());
        cols[7].push_back(std::to_string(gpus));
        cols[8].push_back(std::to_string(node_count));
        cols[9].push_back(tier);
        cols[10].push_back(std::to_string(spec.bid_micros_per_gpu_hour()));
        cols[11].push_back(spec.gpu_model());
        cols[12].push_back(std::to_string(spec.max_runtime_seconds() * 1000));
        cols[13].push_back(spec.requeue() ? "t" : "f");
        cols[14].push_back(std::to_string(it.now_ms));
        cols[15].push_back(std::to_string(shape.cpu_millis()));
        cols[16].push_back(std::to_string(shape.memory_mib()));
        o.job.set_id(id);
        continue;
      }
      auto r = tx.exec_prepared(
          "insert_job", id, it.tenant_id, spec.request_id(), spec.name(), spec_json, ShapeKind(shape),
          shape.slice_profile(), gpus, node_count, tier, spec.bid_micros_per_gpu_hour(),
          spec.gpu_model(), spec.max_runtime_seconds() * 1000, spec.requeue(), it.now_ms,
          shape.cpu_millis(), shape.memory_mib());
      if (r.empty()) {
        FillJob(tx.exec_prepared("job_by_request", it.tenant_id, spec.request_id())[0], &o.job);
        continue;
      }
      FillNew(id, it, &o);
      ++q->second.second;
    }
    if (bulk.empty()) return;
    auto r = tx.exec_prepared("insert_jobs_bulk", PgArray(cols[0]), PgArray(cols[1]), PgArray(cols[2]),
                              PgArray(cols[3]), PgArray(cols[4]), PgArray(cols[5]), PgArray(cols[6]),
                              PgArray(cols[7]), PgArray(cols[8]), PgArray(cols[9]), PgArray(cols[10]),
                              PgArray(cols[11]), PgArray(cols[12]), PgArray(cols[13]), PgArray(cols[14]),
                              PgArray(cols[15]), PgArray(cols[16]));
    std::set<std::string> inserted;
    for (const auto& row : r) inserted.insert(row[0].as<std::string>());
    for (size_t i : bulk) {
      SubmitOutcome& o = out[i];
      const std::string id = o.job.id();
      if (inserted.count(id)) {
        FillNew(id, items[i], &o);
      } else {
        // The request id was seen before (or earlier in this batch): the job created then.
        o.job.Clear();
        FillJob(tx.exec_prepared("job_by_request", items[i].tenant_id, items[i].spec.request_id())[0], &o.job);
      }
    }
  });
  if (!st.ok()) {
    for (auto& o : out) {
      o.status = st;
      o.created = false;
    }
  }
  return out;
}

absl::StatusOr<v1::Job> PgJobStore::GetJob(const std::string& job_id, const std::string& tenant_id) {
  v1::Job job;
  bool found = false;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    auto r = tx.exec_prepared("job_by_id", job_id);
    found = !r.empty();
    if (found) FillJob(r[0], &job);
  });
  if (!st.ok()) return st;
  // Another tenant's job is indistinguishable from a missing one.
  if (!found || (!tenant_id.empty() && job.tenant_id() != tenant_id)) {
    return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  }
  return job;
}

absl::StatusOr<JobPage> PgJobStore::ListJobs(const std::string& tenant_id,
                                             const std::vector<v1::JobState>& states, int page_size,
                                             const std::string& page_token) {
  int64_t after = 0;
  if (!page_token.empty() && (!absl::SimpleAtoi(page_token, &after) || after < 0)) {
    return absl::InvalidArgumentError("page_token: not a token returned by ListJobs");
  }
  std::vector<std::string> names;
  for (auto s : states) names.push_back(StateName(s));
  JobPage page;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    page = JobPage{};
    const std::string sql = absl::StrCat(
        "SELECT ", kJobColumns,
        " FROM jobs j WHERE j.seq > $1 AND ($3 = '' OR j.tenant_id = $3)"
        " AND ($4 = '' OR j.state = ANY (string_to_array($4, ','))) ORDER BY j.seq LIMIT $2");
    auto r = tx.exec_params(sql, after, page_size + 1, tenant_id, absl::StrJoin(names, ","));
    for (size_t i = 0; i < r.size() && static_cast<int>(i) < page_size; ++i) {
      FillJob(r[i], &page.jobs.emplace_back());
    }
    if (static_cast<int>(r.size()) > page_size) {
      page.next_page_token = r[page_size - 1][12].as<std::string>();
    }
  });
  if (!st.ok()) return st;
  return page;
}

absl::StatusOr<v1::Job> PgJobStore::CancelJob(const std::string& job_id, const std::string& tenant_id,
                                              int64_t now_ms, int64_t notice_ms) {
  v1::Job job;
  bool found = false;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    auto r = tx.exec_params("SELECT tenant_id, state FROM jobs WHERE id = $1 FOR UPDATE", job_id);
    found = !r.empty() && (tenant_id.empty() || r[0][0].as<std::string>() == tenant_id);
    if (!found) return;
    const std::string state = r[0][1].as<std::string>();
    if (state == "PENDING") {
      tx.exec_params(
          "UPDATE jobs SET state = 'CANCELLED', reason = 'cancelled by the tenant', finished_ms = $2"
          " WHERE id = $1",
          job_id, now_ms);
      AddEvent(tx, job_id, now_ms, "CANCELLED", "cancelled by the tenant");
    } else if (state == "RUNNING") {
      auto u = tx.exec_params(
          "UPDATE jobs SET stop_requested = true, stop_cause = 'cancel',"
          " stop_reason = 'cancelled by the tenant', stop_deadline_ms = $2,"
          " reason = 'stopping: cancelled by the tenant'"
          " WHERE id = $1 AND (NOT stop_requested OR stop_cause <> 'cancel') RETURNING id",
          job_id, now_ms + notice_ms);
      if (!u.empty()) AddEvent(tx, job_id, now_ms, "RUNNING", "stopping: cancelled by the tenant");
    }
    FillJob(tx.exec_prepared("job_by_id", job_id)[0], &job);
  });
  if (!st.ok()) return st;
  if (!found) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  if (IsTerminal(job.state()) && job.state() != v1::JOB_STATE_CANCELLED) {
    return absl::FailedPreconditionError(
        absl::StrCat("job '", job_id, "' already ended (", StateName(job.state()), ")"));
  }
  return job;
}

absl::StatusOr<std::map<std::string, JobVersion>> PgJobStore::Versions(
    const std::vector<std::string>& ids) {
  std::map<std::string, JobVersion> out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    out.clear();
    auto r = tx.exec_params(
        "SELECT j.id, j.state, j.reason, j.attempt," SURPLUS_OUTBID_SQL
        " FROM jobs j WHERE j.id = ANY (string_to_array($1, ','))",
        absl::StrJoin(ids, ","));
    for (const auto& row : r) {
      out[row[0].as<std::string>()] = JobVersion{row[1].as<std::string>(), ShownReason(row, 1, 2, 4), row[3].as<int>()};
    }
  });
  if (!st.ok()) return st;
  return out;
}

std::vector<scheduler::JobView> PgJobStore::ReadSchedulerJobs(pqxx::transaction_base& tx,
                                                              const std::string& since_xid,
                                                              std::vector<std::string>* ended) {
  std::vector<scheduler::JobView> out;
  const std::string filter = since_xid.empty()
                                 ? " WHERE j.state IN ('PENDING', 'RUNNING')"
                                 : " WHERE j.change_xid >= " + tx.quote(since_xid) + "::xid8";
  auto r = tx.exec(
      "SELECT j.id, j.tenant_id, j.tier, j.bid_micros, j.shape_kind, j.slice_profile,"
      " j.gpus_per_node, j.node_count, j.gpu_model, j.seq, j.max_runtime_ms, j.state,"
      " coalesce(j.started_ms, j.assigned_ms, 0), j.stop_requested,"
      SURPLUS_PLACEMENTS_SQL ", coalesce(j.stop_deadline_ms, 0), j.cpu_millis, j.memory_mib"
      " FROM jobs j" + filter + " ORDER BY j.seq");
  out.reserve(r.size());
  for (const auto& row : r) {
    const std::string state = row[11].as<std::string>();
    if (state != "PENDING" && state != "RUNNING") {
      if (ended != nullptr) ended->push_back(row[0].as<std::string>());
      continue;
    }
    scheduler::JobView v;
    v.id = row[0].as<std::string>();
    v.tenant_id = row[1].as<std::string>();
    v.tier = row[2].as<std::string>() == "on_demand" ? Tier::kOnDemand : Tier::kSpot;
    v.bid = row[3].as<int64_t>();
    const std::string kind = row[4].as<std::string>();
    if (kind == "slice") {
      v.shape = JobShape::Slice(row[5].as<std::string>());
    } else if (kind == "gang") {
      v.shape = JobShape::Gang(row[7].as<int>(), row[6].as<int>());
    } else {
      v.shape = JobShape::WholeGpus(row[6].as<int>());
    }
    v.shape.cpu_millis = row[16].as<int64_t>();
    v.shape.memory_mib = row[17].as<int64_t>();
    v.gpu_model = row[8].as<std::string>();
    v.submit_seq = row[9].as<int64_t>();
    v.max_runtime_ms = row[10].as<int64_t>();
    v.running = state == "RUNNING";
    v.started_at_ms = row[12].as<int64_t>();
    // A job under notice keeps its GPUs until it stops and is not preempted twice.
    v.preempting = v.running && row[13].as<bool>();
    v.preempt_deadline_ms = row[15].as<int64_t>();
    if (v.running && !row[14].is_null()) {
      google::protobuf::RepeatedPtrField<v1::Placement> ps;
      ParsePlacements(row[14].as<std::string>(), &ps);
      for (const auto& p : ps) {
        scheduler::NodePlacement np;
        np.node_id = p.node();
        np.gpu_indices.assign(p.gpu_indices().begin(), p.gpu_indices().end());
        np.slice_profile = p.slice_profile();
        np.slot_start = p.slot_start();
        v.placements.push_back(std::move(np));
      }
    }
    out.push_back(std::move(v));
  }
  return out;
}

absl::StatusOr<std::vector<scheduler::JobView>> PgJobStore::ActiveJobs() {
  std::vector<scheduler::JobView> out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) { out = ReadSchedulerJobs(tx, "", nullptr); });
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<std::vector<std::pair<std::string, std::vector<int>>>> PgJobStore::RunningOnNode(
    const std::string& node) {
  std::vector<std::pair<std::string, std::vector<int>>> out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    out.clear();
    for (const auto& row : tx.exec_params(
             "SELECT j.id, p.gpu_indices FROM jobs j JOIN job_placements p"
             " ON p.job_id = j.id AND p.attempt = j.attempt"
             " WHERE j.state = 'RUNNING' AND p.node = $1 ORDER BY j.seq",
             node)) {
      out.emplace_back(row[0].as<std::string>(), ParseIndices(row[1].as<std::string>()));
    }
  });
  if (!st.ok()) return st;
  return out;
}

namespace {
// Grace a job on an unhealthy GPU gets to exit (the notice, when shorter).
constexpr int64_t kUnhealthyGraceMs = 5'000;

const char* CauseName(scheduler::PreemptCause c) {
  switch (c) {
    case scheduler::PreemptCause::kOutbid: return "outbid";
    case scheduler::PreemptCause::kOwnerReclaim: return "owner";
    case scheduler::PreemptCause::kUnhealthy: return "unhealthy";
    case scheduler::PreemptCause::kCordoned: return "cordon";
  }
  return "outbid";
}

// One statement per kind of decision, whatever the number of jobs: arrays in, one row per
// job out of unnest.
constexpr char kAssignBulk[] =
    "WITH v AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[])"
    "  AS v(id, price, model, reason)),"
    " u AS (UPDATE jobs j SET state = 'RUNNING', attempt = j.attempt + 1, assigned_ms = $5,"
    "  started_ms = NULL, price_micros = v.price, assigned_model = v.model, reason = v.reason, outbid_model = '',"
    "  stop_requested = false, stop_cause = '', stop_reason = '', stop_deadline_ms = NULL"
    "  FROM v WHERE j.id = v.id AND j.state = 'PENDING'"  // not cancelled meanwhile
    "  RETURNING j.id, j.attempt, j.price_micros, j.reason),"
    " pl AS (INSERT INTO job_placements (job_id, attempt, node, gpu_indices, slice_profile, slot_start)"
    "  SELECT u.id, u.attempt, p.node, p.gpus, p.profile, p.slot FROM u"
    "  JOIN unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::int[])"
    "  AS p(job, node, gpus, profile, slot) ON p.job = u.id),"
    " pr AS (INSERT INTO job_prices (job_id, attempt, effective_ms, price_micros)"
    "  SELECT id, attempt, $5, price_micros FROM u ON CONFLICT DO NOTHING)"
    " INSERT INTO job_events (job_id, at_ms, state, reason) SELECT id, $5, 'RUNNING', reason FROM u";

constexpr char kPreemptBulk[] =
    "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])"
    "  AS v(id, cause, reason, deadline)),"
    " u AS (UPDATE jobs j SET stop_requested = true, stop_cause = v.cause, stop_reason = v.reason,"
    "  stop_deadline_ms = v.deadline, reason = 'preempted: ' || v.reason"
    "  FROM v WHERE j.id = v.id AND j.state = 'RUNNING' AND NOT j.stop_requested RETURNING j.id, v.reason)"
    " INSERT INTO job_events (job_id, at_ms, state, reason)"
    " SELECT id, $5, 'RUNNING', 'preemption notice: ' || reason FROM u";

// The tail of a statement whose CTE `u` returns (id, attempt, price_micros) of jobs whose
// price changed: records the new price from $3 on, for billing.
#define SURPLUS_RECORD_NEW_PRICES_SQL                                                    \
  " INSERT INTO job_prices (job_id, attempt, effective_ms, price_micros)"               \
  " SELECT id, attempt, $3, price_micros FROM u"                                        \
  " ON CONFLICT (job_id, attempt, effective_ms) DO UPDATE SET price_micros = EXCLUDED.price_micros"

constexpr char kPriceBulk[] =
    "WITH v AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS v(id, price)),"
    " u AS (UPDATE jobs j SET price_micros = v.price FROM v"
    "  WHERE j.id = v.id AND j.state = 'RUNNING' AND j.price_micros <> v.price"
    "  RETURNING j.id, j.attempt, j.price_micros)"
    SURPLUS_RECORD_NEW_PRICES_SQL;

// A pool's clearing price moved: its running spot jobs not under notice pay
// min(clearing, bid) from now on.
constexpr char kRepricePool[] =
    "WITH u AS (UPDATE jobs SET price_micros = LEAST($2::bigint, bid_micros)"
    "  WHERE state = 'RUNNING' AND tier = 'spot' AND assigned_model = $1 AND NOT stop_requested"
    "  AND price_micros <> LEAST($2::bigint, bid_micros) RETURNING id, attempt, price_micros)"
    SURPLUS_RECORD_NEW_PRICES_SQL;

constexpr char kReasonBulk[] =
    "UPDATE jobs j SET reason = v.reason, outbid_model = v.model"
    " FROM unnest($1::text[], $2::text[], $3::text[]) AS v(id, reason, model)"
    " WHERE j.id = v.id AND j.state = 'PENDING' AND (j.reason, j.outbid_model) IS DISTINCT FROM (v.reason, v.model)";

template <typename T>
std::vector<std::string> AsText(const std::vector<T>& v) {
  std::vector<std::string> out;
  out.reserve(v.size());
  for (const T& x : v) out.push_back(absl::StrCat(x));
  return out;
}

}  // namespace

absl::Status PgJobStore::ApplyDecisions(const scheduler::Decisions& d,
                                        const std::map<std::string, std::string>& job_models,
                                        int64_t now_ms, int64_t notice_ms,
                                        const std::vector<RoundPrice>& price_rows) {
  // Arrays built once, outside the (retryable) transaction.
  std::vector<std::string> a_ids, a_models, a_reasons, p_jobs, p_nodes, p_gpus, p_profiles;
  std::vector<int64_t> a_prices;
  std::vector<int> p_slots;
  for (const auto& a : d.assignments) {
    auto model_it = job_models.find(a.job_id);
    std::vector<std::string> nodes;
    for (const auto& p : a.placements) {
      nodes.push_back(p.node_id);
      p_jobs.push_back(a.job_id);
      p_nodes.push_back(p.node_id);
      p_gpus.push_back(JoinInts(p.gpu_indices));
      p_profiles.push_back(p.slice_profile);
      p_slots.push_back(p.slot_start);
    }
    a_ids.push_back(a.job_id);
    a_prices.push_back(a.price);
    a_models.push_back(model_it == job_models.end() ? "" : model_it->second);
    a_reasons.push_back(absl::StrCat("starting on ", absl::StrJoin(nodes, ", ")));
  }
  std::vector<std::string> x_ids, x_causes, x_reasons;
  std::vector<int64_t> x_deadlines;
  for (const auto& p : d.preemptions) {
    // A failing GPU cannot honour a long notice: its jobs get a short grace to exit.
    const int64_t notice =
        p.cause == scheduler::PreemptCause::kUnhealthy ? std::min(notice_ms, kUnhealthyGraceMs) : notice_ms;
    x_ids.push_back(p.job_id);
    x_causes.push_back(CauseName(p.cause));
    x_reasons.push_back(p.reason);
    x_deadlines.push_back(now_ms + notice);
  }
  std::vector<std::string> r_ids, r_prices, q_ids, q_reasons, q_models;
  for (const auto& [job_id, price] : d.running_prices) {
    r_ids.push_back(job_id);
    r_prices.push_back(absl::StrCat(price));
  }
  for (const auto& [job_id, reason] : d.pending_reasons) {
    q_ids.push_back(job_id);
    q_reasons.push_back(reason.text);
    q_models.push_back(reason.outbid_model);
  }
  return pool_.Transact([&](pqxx::work& tx) {
    if (!a_ids.empty()) {
      tx.exec_params(kAssignBulk, PgArray(a_ids), PgArray(AsText(a_prices)), PgArray(a_models), PgArray(a_reasons),
                     now_ms, PgArray(p_jobs), PgArray(p_nodes), PgArray(p_gpus), PgArray(p_profiles),
                     PgArray(AsText(p_slots)));
    }
    if (!x_ids.empty()) {
      tx.exec_params(kPreemptBulk, PgArray(x_ids), PgArray(x_causes), PgArray(x_reasons),
                     PgArray(AsText(x_deadlines)), now_ms);
    }
    if (!r_ids.empty()) tx.exec_params(kPriceBulk, PgArray(r_ids), PgArray(r_prices), now_ms);
    for (const auto& rp : d.repriced_pools) tx.exec_params(kRepricePool, rp.gpu_model, rp.clearing_price, now_ms);
    if (!q_ids.empty()) tx.exec_params(kReasonBulk, PgArray(q_ids), PgArray(q_reasons), PgArray(q_models));
    InsertRoundPrices(tx, price_rows);
  });
}

absl::StatusOr<std::vector<std::string>> PgJobStore::MarkLostNodes(int64_t lost_after_ms, int64_t now_ms) {
  std::vector<std::string> lost;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    lost.clear();
    auto r = tx.exec_params(
        "UPDATE nodes SET lost = true WHERE NOT lost AND last_heartbeat_ms < $1 RETURNING name",
        now_ms - lost_after_ms);
    for (const auto& row : r) lost.push_back(row[0].as<std::string>());
    if (lost.empty()) return;
    auto jobs = tx.exec_params(
        "SELECT DISTINCT j.id, j.requeue FROM jobs j JOIN job_placements p"
        " ON p.job_id = j.id AND p.attempt = j.attempt"
        " WHERE j.state = 'RUNNING' AND p.node = ANY (string_to_array($1, ','))",
        absl::StrJoin(lost, ","));
    for (const auto& row : jobs) {
      const std::string id = row[0].as<std::string>();
      if (row[1].as<bool>()) {
        tx.exec_params(
            "UPDATE jobs SET state = 'PENDING', reason = 'requeued: its node was lost',"
            " stop_requested = false, price_micros = 0 WHERE id = $1",
            id);
        AddEvent(tx, id, now_ms, "PENDING", "requeued: its node was lost");
      } else {
        tx.exec_params(
            "UPDATE jobs SET state = 'LOST', reason = 'its node stopped reporting', finished_ms = $2"
            " WHERE id = $1",
            id, now_ms);
        AddEvent(tx, id, now_ms, "LOST", "its node stopped reporting");
      }
    }
  });
  if (!st.ok()) return st;
  return lost;
}

absl::StatusOr<std::vector<DesiredJob>> PgJobStore::DesiredForNode(const std::string& node) {
  std::vector<DesiredJob> out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    out.clear();
    auto r = tx.exec_params(
        "SELECT j.id, j.tenant_id, j.attempt, j.spec_json, p.gpu_indices, p.slice_profile,"
        " p.slot_start, j.assigned_model, j.stop_requested, j.stop_reason,"
        " coalesce(j.stop_deadline_ms, 0), j.stop_cause"
        " FROM jobs j JOIN job_placements p ON p.job_id = j.id AND p.attempt = j.attempt"
        " WHERE j.state = 'RUNNING' AND p.node = $1 ORDER BY j.seq",
        node);
    for (const auto& row : r) {
      DesiredJob d;
      v1::Assignment& a = d.assignment;
      a.set_job_id(row[0].as<std::string>());
      a.set_tenant_id(row[1].as<std::string>());
      a.set_attempt(row[2].as<int>());
      google::protobuf::util::JsonParseOptions opts;
      opts.ignore_unknown_fields = true;
      (void)google::protobuf::util::JsonStringToMessage(row[3].as<std::string>(), a.mutable_spec(), opts);
      v1::Placement* p = a.mutable_placement();
      p->set_node(node);
      AddIndices(row[4].as<std::string>(), p);
      p->set_slice_profile(row[5].as<std::string>());
      p->set_slot_start(row[6].as<int>());
      a.set_gpu_model(row[7].as<std::string>());
      if (const GpuModel* m = FindGpuModel(a.gpu_model())) {
        if (const SliceProfile* sp = m->FindProfile(p->slice_profile())) {
          a.set_compute_units(sp->compute_units);
          a.set_sm_count(sp->sm_count);
          a.set_memory_mib(sp->memory_mib);
        }
      }
      d.stop_requested = row[8].as<bool>();
      d.stop_reason = row[9].as<std::string>();
      d.stop_deadline_ms = row[10].as<int64_t>();
      d.preemption = row[11].as<std::string>() != "cancel";
      out.push_back(std::move(d));
    }
  });
  if (!st.ok()) return st;
  return out;
}

absl::Status PgJobStore::ApplyStatus(const std::string& node, const v1::JobStatus& status, int64_t now_ms) {
  (void)node;
  return pool_.Transact([&](pqxx::work& tx) {
    auto r = tx.exec_params(
        "SELECT state, stop_requested, stop_cause, stop_reason, requeue FROM jobs"
        " WHERE id = $1 AND attempt = $2 FOR UPDATE",
        status.job_id(), status.attempt());
    if (r.empty() || r[0][0].as<std::string>() != "RUNNING") return;  // stale report
    const int64_t at = status.at_ms() > 0 ? status.at_ms() : now_ms;
    if (status.phase() == v1::JobStatus::PHASE_STARTED) {
      auto u = tx.exec_params(
          "UPDATE jobs SET started_ms = $2, reason = $3 WHERE id = $1 AND started_ms IS NULL RETURNING id",
          status.job_id(), at, absl::StrCat("running on ", node));
      if (!u.empty()) AddEvent(tx, status.job_id(), at, "RUNNING", absl::StrCat("started on ", node));
      return;
    }
    const bool stop_requested = r[0][1].as<bool>();
    const std::string cause = r[0][2].as<std::string>();
    const std::string stop_reason = r[0][3].as<std::string>();
    const bool requeue = r[0][4].as<bool>();
    std::string state;
    std::string reason;
    std::optional<int> exit_code;
    if (status.phase() == v1::JobStatus::PHASE_EXITED || status.phase() == v1::JobStatus::PHASE_STOPPED ||
        status.phase() == v1::JobStatus::PHASE_TIMED_OUT) {
      exit_code = status.exit_code();
    }
    if (stop_requested && cause == "cancel") {
      state = "CANCELLED";
      reason = "cancelled by the tenant";
    } else if (stop_requested && cause == "unhealthy") {
      // Not the tenant's doing and not a market decision: the hardware failed under it.
      state = requeue ? "PENDING" : "FAILED";
      reason = requeue ? absl::StrCat("requeued: ", stop_reason) : absl::StrCat("failed: ", stop_reason);
    } else if (stop_requested) {
      state = requeue ? "PENDING" : "PREEMPTED";
      reason = requeue ? absl::StrCat("requeued after preemption: ", stop_reason)
                       : absl::StrCat("preempted: ", stop_reason);
    } else if (status.phase() == v1::JobStatus::PHASE_FAILED_TO_START) {
      state = "FAILED";
      reason = absl::StrCat("failed to start: ", status.message());
      exit_code.reset();
    } else if (status.phase() == v1::JobStatus::PHASE_TIMED_OUT) {
      state = "FAILED";
      reason = status.message().empty() ? "exceeded its maximum runtime" : status.message();
    } else if (status.phase() == v1::JobStatus::PHASE_STOPPED) {
      // The worker stopped it on its own (shutting down): the tenant did nothing wrong.
      const std::string why = status.message().empty() ? "stopped by the worker" : status.message();
      state = requeue ? "PENDING" : "FAILED";
      reason = requeue ? absl::StrCat("requeued: ", why) : why;
    } else if (status.exit_code() == 0) {
      state = "SUCCEEDED";
      reason = status.message().empty() ? "exited with code 0" : status.message();
    } else {
      state = "FAILED";
      reason = status.message().empty() ? absl::StrCat("exited with code ", status.exit_code())
                                        : status.message();
    }
    if (state == "PENDING") {
      tx.exec_params(
          "UPDATE jobs SET state = 'PENDING', reason = $2, stop_requested = false, price_micros = 0"
          " WHERE id = $1",
          status.job_id(), reason);
    } else {
      tx.exec_params(
          "UPDATE jobs SET state = $2, reason = $3, exit_code = $4, finished_ms = $5,"
          " stop_requested = false WHERE id = $1",
          status.job_id(), state, reason, exit_code, at);
    }
    AddEvent(tx, status.job_id(), at, state, reason);
  });
}

absl::Status PgJobStore::AppendLog(const v1::JobLogChunk& chunk) {
  constexpr int64_t kMaxLogBytes = 8 << 20;  // keep at most 8 MiB of log per job
  if (chunk.offset() >= kMaxLogBytes || chunk.data().empty()) return absl::OkStatus();
  return pool_.Transact([&](pqxx::work& tx) {
    tx.exec_params(
        "INSERT INTO job_logs (job_id, attempt, offset_bytes, data)"
        " SELECT $1, CASE WHEN $4 > 0 THEN $4 ELSE attempt END, $2, decode($3, 'base64')"
        " FROM jobs WHERE id = $1 ON CONFLICT DO NOTHING",
        chunk.job_id(), chunk.offset(), absl::Base64Escape(chunk.data()), chunk.attempt());
  });
}

absl::StatusOr<LogRead> PgJobStore::ReadLog(const std::string& job_id, int attempt, int64_t offset,
                                            int max_bytes) {
  LogRead out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    out = LogRead{};
    out.next_offset = offset;
    auto job = tx.exec_params("SELECT state, attempt FROM jobs WHERE id = $1", job_id);
    if (job.empty()) return;
    const std::string state = job[0][0].as<std::string>();
    out.latest_attempt = job[0][1].as<int>();
    out.attempt = attempt > 0 ? attempt : out.latest_attempt;
    // An attempt's log is complete once a later attempt began, the job ended, or the job
    // waits to run again.
    const bool ended = out.attempt < out.latest_attempt || IsTerminal(StateFromName(state)) || state == "PENDING";
    auto r = tx.exec_params(
        "SELECT offset_bytes, encode(data, 'base64') FROM job_logs WHERE job_id = $1 AND attempt = $2"
        " AND offset_bytes + length(data) > $3 ORDER BY offset_bytes",
        job_id, out.attempt, offset);
    for (const auto& row : r) {
      int64_t off = row[0].as<int64_t>();
      std::string chunk;
      absl::Base64Unescape(row[1].as<std::string>(), &chunk);
      if (off > out.next_offset) break;  // gap: the rest has not arrived yet
      size_t skip = static_cast<size_t>(out.next_offset - off);
      if (skip >= chunk.size()) continue;
      size_t take = std::min(chunk.size() - skip, static_cast<size_t>(max_bytes) - out.data.size());
      out.data.append(chunk, skip, take);
      out.next_offset += static_cast<int64_t>(take);
      if (out.data.size() >= static_cast<size_t>(max_bytes)) break;
    }
    out.eof = ended && static_cast<int>(out.data.size()) < max_bytes;
  });
  if (!st.ok()) return st;
  return out;
}

}  // namespace surplus::store
