#include "src/store/node_store.h"

#include <cstdlib>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "src/common/grpc_util.h"
#include "surplus/gpu_models.h"
#include "surplus/host_resources.h"

namespace surplus::store {
namespace v1 = surplus::v1;

absl::Status PgNodeStore::Register(const v1::RegisterRequest& req, int64_t now_ms) {
  return pool_.Transact([&](pqxx::work& tx) {
    tx.exec_params(
        "INSERT INTO nodes (name, gpu_model, fabric, backend, registered_ms, last_heartbeat_ms,"
        " cpu_millis, memory_mib)"
        " VALUES ($1, $2, $3, $4, $5, $5, $6, $7)"
        " ON CONFLICT (name) DO UPDATE SET gpu_model = EXCLUDED.gpu_model, fabric = EXCLUDED.fabric,"
        " backend = EXCLUDED.backend, lost = false, last_heartbeat_ms = EXCLUDED.last_heartbeat_ms,"
        " cpu_millis = EXCLUDED.cpu_millis, memory_mib = EXCLUDED.memory_mib",
        req.node(), req.gpu_model(), req.fabric(), req.backend(), now_ms, req.cpu_millis(), req.memory_mib());
    for (const auto& g : req.gpus()) {
      std::optional<std::string> mig;  // NULL: not in MIG mode
      if (g.mig_enabled()) {
        std::vector<std::string> slices;
        for (const auto& m : g.mig_slices()) slices.push_back(absl::StrCat(m.profile(), "@", m.slot_start()));
        mig = absl::StrJoin(slices, ",");
      }
      tx.exec_params(
          "INSERT INTO gpus (node, idx, uuid, memory_total_mib, owner_idle_since_ms, mig_slices)"
          " VALUES ($1, $2, $3, $4, $5, $6)"
          " ON CONFLICT (node, idx) DO UPDATE SET uuid = EXCLUDED.uuid,"
          " memory_total_mib = EXCLUDED.memory_total_mib, mig_slices = EXCLUDED.mig_slices",
          req.node(), g.index(), g.uuid(), g.memory_total_mib(), now_ms, mig);
    }
    tx.exec_params("DELETE FROM gpus WHERE node = $1 AND idx >= $2", req.node(), req.gpus_size());
    // The GPU list may have changed shape: the scheduler re-reads the whole node.
    tx.exec_params("UPDATE nodes SET change_xid = pg_current_xact_id() WHERE name = $1", req.node());
  });
}

bool TelemetryWriteFilter::GpuDue(const Gpu* last, const v1::GpuSample& g, int64_t at_ms) const {
  if (last == nullptr) return true;
  const bool busy = g.owner_processes() > 0;
  if (last->healthy != g.healthy() || last->reason != g.health_reason() || last->busy != busy) return true;
  if (last->util == g.utilization_pct() && last->mem == g.memory_used_mib()) return false;
  return std::abs(last->util - g.utilization_pct()) >= TelemetryWriteRule::kFigureStepPct ||
         std::abs(last->mem - g.memory_used_mib()) >= TelemetryWriteRule::kFigureStepMib ||
         at_ms - last->at_ms >= TelemetryWriteRule::kFigureMaxAgeMs;
}

std::optional<TelemetryReport> TelemetryWriteFilter::Due(const TelemetryReport& report) const {
  if (whole_ms_ < 0 || report.at_ms - whole_ms_ >= whole_every_ms_) {
    TelemetryReport whole = report;
    whole.whole = true;
    return whole;
  }
  TelemetryReport out{report.node, {}, report.at_ms, false};
  for (const auto& g : report.telemetry.gpus()) {
    auto it = gpus_.find(g.index());
    if (GpuDue(it == gpus_.end() ? nullptr : &it->second, g, report.at_ms)) *out.telemetry.add_gpus() = g;
  }
  if (out.telemetry.gpus_size() == 0 && report.at_ms - heartbeat_ms_ < heartbeat_every_ms_) return std::nullopt;
  return out;
}

void TelemetryWriteFilter::Written(const TelemetryReport& written) {
  heartbeat_ms_ = written.at_ms;
  if (written.whole) whole_ms_ = written.at_ms;
  for (const auto& g : written.telemetry.gpus()) {
    gpus_[g.index()] = Gpu{g.healthy(), g.health_reason(), g.owner_processes() > 0, g.utilization_pct(),
                           g.memory_used_mib(), written.at_ms};
  }
}

void TelemetryWriteFilter::Reset() {
  heartbeat_ms_ = -1;
  whole_ms_ = -1;
  gpus_.clear();
}

absl::Status PgNodeStore::RecordTelemetry(const std::string& node, const v1::Telemetry& t, int64_t now_ms) {
  return RecordTelemetryBatch({TelemetryReport{node, t, now_ms}});
}

absl::Status PgNodeStore::RecordTelemetryBatch(const std::vector<TelemetryReport>& reports) {
  // Arrays per pass: pass k holds each node's k-th report of the batch, since one UPDATE
  // applies at most one source row to each target row. Usually there is one pass.
  struct Pass {
    std::vector<std::string> nodes, node_at, g_node, g_idx, g_util, g_mem, g_healthy, g_reason, g_busy, g_at;
  };
  std::vector<Pass> passes;
  std::map<std::string, size_t> seen;
  for (const TelemetryReport& r : reports) {
    const size_t k = seen[r.node]++;
    if (k == passes.size()) passes.emplace_back();
    Pass& p = passes[k];
    const std::string at = absl::StrCat(r.at_ms);
    p.nodes.push_back(r.node);
    p.node_at.push_back(at);
    for (const auto& g : r.telemetry.gpus()) {
      p.g_node.push_back(r.node);
      p.g_idx.push_back(absl::StrCat(g.index()));
      p.g_util.push_back(absl::StrCat(g.utilization_pct()));
      p.g_mem.push_back(absl::StrCat(g.memory_used_mib()));
      p.g_healthy.push_back(g.healthy() ? "t" : "f");
      p.g_reason.push_back(g.health_reason());
      p.g_busy.push_back(g.owner_processes() > 0 ? "t" : "f");
      p.g_at.push_back(at);
    }
  }
  return pool_.Transact([&](pqxx::work& tx) {
    tx.exec("SET LOCAL synchronous_commit = off");
    for (const Pass& p : passes) {
      tx.exec_params(
          "UPDATE nodes n SET last_heartbeat_ms = v.at, lost = false"
          " FROM unnest($1::text[], $2::bigint[]) AS v(name, at) WHERE n.name = v.name",
          PgArray(p.nodes), PgArray(p.node_at));
      if (p.g_node.empty()) continue;
      // A GPU row is rewritten when its state changed, or its figures moved far or are old.
      tx.exec_params(
          "UPDATE gpus g SET utilization_pct = v.util, memory_used_mib = v.mem, sampled_ms = v.at,"
          " healthy = v.healthy, health_reason = v.reason, owner_busy = v.busy,"
          " owner_idle_since_ms = CASE WHEN v.busy THEN 0 WHEN g.owner_idle_since_ms = 0 THEN v.at"
          "   ELSE g.owner_idle_since_ms END"
          " FROM unnest($1::text[], $2::int[], $3::int[], $4::bigint[], $5::bool[], $6::text[], $7::bool[],"
          "   $8::bigint[]) AS v(node, idx, util, mem, healthy, reason, busy, at)"
          " WHERE g.node = v.node AND g.idx = v.idx AND ("
          "   (g.healthy, g.health_reason, g.owner_busy) IS DISTINCT FROM (v.healthy, v.reason, v.busy)"
          "   OR ((g.utilization_pct, g.memory_used_mib) IS DISTINCT FROM (v.util, v.mem)"
          "     AND (abs(g.utilization_pct - v.util) >= $9 OR abs(g.memory_used_mib - v.mem) >= $10"
          "          OR g.sampled_ms <= v.at - $11)))",
          PgArray(p.g_node), PgArray(p.g_idx), PgArray(p.g_util), PgArray(p.g_mem), PgArray(p.g_healthy),
          PgArray(p.g_reason), PgArray(p.g_busy), PgArray(p.g_at), TelemetryWriteRule::kFigureStepPct,
          TelemetryWriteRule::kFigureStepMib, TelemetryWriteRule::kFigureMaxAgeMs);
    }
  });
}

absl::StatusOr<v1::Node> PgNodeStore::SetCordoned(const std::string& node, bool cordoned, bool drain) {
  bool found = false;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    found = !tx.exec_params("UPDATE nodes SET cordoned = $2, draining = $3 WHERE name = $1 RETURNING name", node,
                            cordoned || drain, drain)
                 .empty();
  });
  if (!st.ok()) return st;
  if (!found) return absl::NotFoundError(absl::StrCat("node '", node, "' not found"));
  v1::Node out;
  out.set_name(node);
  out.set_cordoned(cordoned || drain);
  out.set_draining(drain);
  return out;
}

absl::Status PgNodeStore::SetReclaimed(const std::string& node, const std::vector<int>& gpus, bool reclaimed,
                                       int64_t now_ms) {
  // An index the node lacks fails the whole request: nothing is changed.
  absl::Status refused;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    refused = absl::OkStatus();
    std::set<int> have;
    for (const auto& row : tx.exec_params("SELECT idx FROM gpus WHERE node = $1 FOR UPDATE", node)) {
      have.insert(row[0].as<int>());
    }
    if (have.empty()) {
      refused = absl::NotFoundError(absl::StrCat("node '", node, "' not found"));
      return;
    }
    for (int g : gpus) {
      if (have.count(g) == 0) {
        refused = absl::InvalidArgumentError(absl::StrCat("gpu_indices: node '", node, "' has no GPU ", g, " (its GPUs are ",
                                                          *have.begin(), "-", *have.rbegin(), ")"));
        return;
      }
    }
    tx.exec_params(
        "UPDATE gpus SET owner_reclaimed = $3,"
        " owner_idle_since_ms = CASE WHEN $3 THEN 0 ELSE $4::bigint END"
        " WHERE node = $1 AND ($2 = '' OR idx = ANY (string_to_array($2, ',')::int[]))",
        node, absl::StrJoin(gpus, ","), reclaimed, now_ms);
  });
  if (!st.ok()) return st;
  return refused;
}

namespace {
constexpr char kNodeGpuQueryHead[] =
    "SELECT n.name, n.gpu_model, n.fabric, n.cordoned, n.lost, n.last_heartbeat_ms, n.backend,"
    " g.idx, g.uuid, g.utilization_pct, g.memory_used_mib, g.memory_total_mib, g.healthy,"
    " g.health_reason, g.owner_busy, g.owner_reclaimed, g.owner_idle_since_ms, n.draining,"
    " g.mig_slices, n.cpu_millis, n.memory_mib"
    " FROM nodes n LEFT JOIN gpus g ON g.node = n.name";
constexpr char kNodeGpuQueryTail[] = " ORDER BY n.name, g.idx";

bool Offerable(const pqxx::row& r, const HarvestConfig& cfg, int64_t now_ms) {
  if (r[7].is_null()) return false;
  const bool busy = r[14].as<bool>() || r[15].as<bool>();
  const int64_t idle_since = r[16].as<int64_t>();
  return !busy && idle_since > 0 && now_ms - idle_since >= cfg.owner_idle_window_ms;
}
}  // namespace

absl::StatusOr<std::vector<v1::Node>> PgNodeStore::ListNodes(const HarvestConfig& cfg, int64_t now_ms) {
  std::vector<v1::Node> out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    out.clear();
    std::map<std::string, std::vector<std::string>> jobs_on;  // "node/idx" -> job ids
    // What each running job holds on a node, to charge its host CPU and memory there.
    struct Held {
      std::string slice_profile;
      int gpus = 0;
      int64_t cpu_millis = 0, memory_mib = 0;  // asked (0: its GPU share)
    };
    std::map<std::string, std::vector<Held>> held_on;  // node -> its jobs
    for (const auto& row : tx.exec(
             "SELECT p.node, p.gpu_indices, j.id, p.slice_profile, j.cpu_millis, j.memory_mib"
             " FROM jobs j JOIN job_placements p"
             " ON p.job_id = j.id AND p.attempt = j.attempt WHERE j.state = 'RUNNING'")) {
      const std::string node = row[0].as<std::string>();
      Held& h = held_on[node].emplace_back();
      h.slice_profile = row[3].as<std::string>();
      h.cpu_millis = row[4].as<int64_t>();
      h.memory_mib = row[5].as<int64_t>();
      for (absl::string_view idx : absl::StrSplit(row[1].as<std::string>(), ',', absl::SkipEmpty())) {
        jobs_on[absl::StrCat(node, "/", idx)].push_back(row[2].as<std::string>());
        ++h.gpus;
      }
    }
    for (const auto& r : tx.exec(absl::StrCat(kNodeGpuQueryHead, kNodeGpuQueryTail))) {
      const std::string name = r[0].as<std::string>();
      if (out.empty() || out.back().name() != name) {
        v1::Node& n = out.emplace_back();
        n.set_name(name);
        n.set_gpu_model(r[1].as<std::string>());
        n.set_fabric(r[2].as<std::string>());
        n.set_cordoned(r[3].as<bool>() || r[17].as<bool>());
        n.set_draining(r[17].as<bool>());
        n.set_lost(r[4].as<bool>());
        SetTimestampMs(r[5].as<int64_t>(), n.mutable_last_heartbeat());
        n.set_backend(r[6].as<std::string>());
        n.set_cpu_millis(r[19].as<int64_t>());
        n.set_memory_mib(r[20].as<int64_t>());
      }
      if (r[7].is_null()) continue;
      v1::Node& n = out.back();
      v1::Gpu* g = n.add_gpus();
      g->set_index(r[7].as<int>());
      g->set_uuid(r[8].as<std::string>());
      g->set_utilization_pct(r[9].as<int>());
      g->set_memory_used_mib(r[10].as<int64_t>());
      g->set_memory_total_mib(r[11].as<int64_t>());
      g->set_healthy(r[12].as<bool>());
      g->set_health_reason(r[13].as<std::string>());
      auto it = jobs_on.find(absl::StrCat(name, "/", g->index()));
      if (it != jobs_on.end()) {
        for (const auto& id : it->second) g->add_job_ids(id);
      }
      if (r[14].as<bool>() || r[15].as<bool>()) {
        g->set_use(v1::GPU_USE_OWNER_BUSY);
      } else if (g->job_ids_size() > 0) {
        g->set_use(v1::GPU_USE_SOLD);
      } else if (n.cordoned() || n.lost() || !g->healthy() || !Offerable(r, cfg, now_ms)) {
        g->set_use(v1::GPU_USE_UNAVAILABLE);
      } else {
        g->set_use(v1::GPU_USE_IDLE);
      }
    }
    // Host charged to each node's running jobs, by the scheduler's rule (HostCharge).
    for (v1::Node& n : out) {
      auto it = held_on.find(n.name());
      if (it == held_on.end()) continue;
      const GpuModel* model = FindGpuModel(n.gpu_model());
      for (const Held& h : it->second) {
        const int64_t units = int64_t{PlacementUnitsPerGpu(model, h.slice_profile)} * h.gpus;
        n.set_cpu_millis_used(n.cpu_millis_used() + HostCharge(h.cpu_millis, n.cpu_millis(), units, n.gpus_size()));
        n.set_memory_mib_used(n.memory_mib_used() + HostCharge(h.memory_mib, n.memory_mib(), units, n.gpus_size()));
      }
    }
  });
  if (!st.ok()) return st;
  return out;
}

std::vector<StoredNode> PgNodeStore::ReadSchedulerNodes(pqxx::transaction_base& tx, const std::string& since_xid,
                                                       std::vector<std::string>* gone) {
  std::vector<StoredNode> out;
  // Nodes whose row or any GPU row changed since the watermark (all when there is none),
  // found through both change_xid indexes (an OR of the two would walk every node).
  const std::string filter =
      since_xid.empty()
          ? ""
          : " WHERE n.name IN (SELECT name FROM nodes WHERE change_xid >= " + tx.quote(since_xid) +
                "::xid8 UNION SELECT node FROM gpus WHERE change_xid >= " + tx.quote(since_xid) + "::xid8)";
  for (const auto& r : tx.exec(absl::StrCat(kNodeGpuQueryHead, filter, kNodeGpuQueryTail))) {
    const std::string name = r[0].as<std::string>();
    if (r[4].as<bool>()) {  // lost
      if (gone != nullptr && (gone->empty() || gone->back() != name)) gone->push_back(name);
      continue;
    }
    if (out.empty() || out.back().view.id != name) {
      scheduler::NodeView& n = out.emplace_back().view;
      n.id = name;
      n.gpu_model = r[1].as<std::string>();
      n.fabric = r[2].as<std::string>();
      n.cordoned = r[3].as<bool>() || r[17].as<bool>();
      n.draining = r[17].as<bool>();
      n.cpu_millis = r[19].as<int64_t>();
      n.memory_mib = r[20].as<int64_t>();
    }
    if (r[7].is_null()) continue;
    scheduler::GpuView& g = out.back().view.gpus.emplace_back();
    g.index = r[7].as<int>();
    g.healthy = r[12].as<bool>();
    if (!r[18].is_null()) {
      g.mig = true;
      for (absl::string_view s : absl::StrSplit(r[18].as<std::string>(), ',', absl::SkipEmpty())) {
        std::pair<absl::string_view, absl::string_view> parts = absl::StrSplit(s, absl::MaxSplits('@', 1));
        int start = 0;
        if (absl::SimpleAtoi(parts.second, &start)) g.mig_slices.emplace_back(std::string(parts.first), start);
      }
    }
    scheduler::OwnerRecord& o = out.back().owner.emplace_back();
    o.telemetry_busy = r[14].as<bool>();
    o.reclaimed = r[15].as<bool>();
    o.idle_since_ms = r[16].as<int64_t>();
  }
  return out;
}

}  // namespace surplus::store
