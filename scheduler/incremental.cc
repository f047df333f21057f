#include "scheduler/incremental.h"

#include <algorithm>
#include <cassert>
#include <functional>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "surplus/host_resources.h"

namespace surplus::scheduler {
namespace {

constexpr int64_t kNever = Reservation::kUnknownStart;
constexpr uint8_t kFull = 0xFF;
/// Running spot jobs considered as victims for one blocked job (lowest bids first). Bounds
/// the cost of a round when a high bid meets a fleet full of low ones.
constexpr int kMaxVictimCandidates = 256;

std::string GpusText(int64_t units) {
  if (units % kComputeUnitsPerGpu == 0) return absl::StrCat(units / kComputeUnitsPerGpu);
  const int64_t hundredths = (units * 200 + kComputeUnitsPerGpu) / (2 * kComputeUnitsPerGpu);
  const int64_t frac = hundredths % 100;
  return absl::StrCat(hundredths / 100, ".", frac < 10 ? "0" : "", frac);
}

struct Cost {
  int victims = 0;
  int64_t units = 0;
  bool operator<(const Cost& o) const {
    return std::tie(victims, units) < std::tie(o.victims, o.units);
  }
  Cost& operator+=(const Cost& o) {
    victims += o.victims;
    units += o.units;
    return *this;
  }
};

}  // namespace

IncrementalScheduler::IncrementalScheduler(PackPolicy policy) : index_(policy) {}

IncrementalScheduler::IncrementalScheduler(const Snapshot& snapshot, PackPolicy policy)
    : index_(policy) {
  SetMarket(snapshot.market);
  size_t gpus = 0;
  for (const NodeView& n : snapshot.nodes) gpus += n.gpus.size();
  nodes_.reserve(snapshot.nodes.size());
  node_ids_.reserve(snapshot.nodes.size());
  gpus_.reserve(gpus);
  index_.Reserve(snapshot.nodes.size(), gpus);
  for (const NodeView& n : snapshot.nodes) UpsertNode(n);
  // Headroom: growing the job table moves every job, a pause of hundreds of milliseconds at
  // 100,000 jobs that would otherwise fall on the first job added after a load.
  const size_t room = snapshot.jobs.size() + snapshot.jobs.size() / 2 + 16;
  jobs_.reserve(room);
  job_ids_.reserve(room);
  bulk_ = true;
  for (const JobView& j : snapshot.jobs) UpsertJob(j);
  bulk_ = false;
  // Queue the jobs pending now, in one sorted pass. (Taken from the loaded jobs, not noted
  // as they were loaded: a later row with the same id replaces an earlier one.)
  std::vector<PendingKey> keys;
  for (size_t idx = 0; idx < jobs_.size(); ++idx) {
    if (jobs_[idx].live && !jobs_[idx].view.running) keys.push_back(QueueKey(static_cast<int>(idx)));
  }
  std::sort(keys.begin(), keys.end());
  for (const PendingKey& k : keys) {
    pending_.insert(pending_.end(), k);
    tenants_[jobs_[k.job].tenant].pending.insert({jobs_[k.job].view.submit_seq, k.job});
  }
}

void IncrementalScheduler::ApplyDelta(const SnapshotDelta& delta) {
  if (delta.market) SetMarket(*delta.market);
  for (const std::string& id : delta.remove_jobs) RemoveJob(id);
  for (const std::string& id : delta.remove_nodes) RemoveNode(id);
  for (const NodeView& n : delta.upsert_nodes) UpsertNode(n);
  for (const JobView& j : delta.upsert_jobs) UpsertJob(j);
}

// --- Loading -------------------------------------------------------------------------------

IncrementalScheduler::PendingKey IncrementalScheduler::QueueKey(int job) const {
  const JobView& v = jobs_[job].view;
  const int tier = v.tier == Tier::kOnDemand ? 0 : 1;
  return PendingKey{tier, tier == 0 ? 0 : -v.bid, v.submit_seq, job};
}

int IncrementalScheduler::NodeId(const std::string& id) const {
  auto it = node_ids_.find(id);
  return it == node_ids_.end() ? -1 : it->second;
}

int IncrementalScheduler::PoolFor(const std::string& model_name) {
  const GpuModel* model = FindGpuModel(model_name);
  if (model == nullptr || MaskTableFor(model) == nullptr) return -1;
  auto it = pool_ids_.find(model->name);
  if (it != pool_ids_.end()) return it->second;
  const int id = index_.AddPool(model);
  pool_ids_[model->name] = id;
  PoolRec rec;
  rec.model = model->name;
  pools_.push_back(std::move(rec));
  pool_nodes_.emplace_back();
  return id;
}

int IncrementalScheduler::TenantId(const std::string& name) {
  auto it = tenant_ids_.find(name);
  if (it != tenant_ids_.end()) return it->second;
  Tenant t;
  t.name = name;
  auto q = market_.quotas.find(name);
  if (q != market_.quotas.end()) t.quota = q->second;
  tenants_.push_back(std::move(t));
  const int id = static_cast<int>(tenants_.size()) - 1;
  tenant_ids_[name] = id;
  return id;
}

void IncrementalScheduler::SetMarket(const MarketConfig& market) {
  market_ = market;
  market_changed_ = true;
  for (Tenant& t : tenants_) {
    auto q = market_.quotas.find(t.name);
    t.quota = q == market_.quotas.end() ? TenantQuota{} : q->second;
  }
}

std::vector<std::pair<int, int>> IncrementalScheduler::ResolveMigSlices(int pool,
                                                                      const GpuView& gpu) const {
  std::vector<std::pair<int, int>> out;
  if (!gpu.mig || pool < 0) return out;
  const GpuModel& model = index_.Model(pool);
  uint8_t taken = 0;
  std::string why;  // an instance that is not valid where it stands is left out
  for (const auto& [name, start] : gpu.mig_slices) {
    if (const SliceProfile* prof = AddMigInstance(model, name, start, &taken, &why)) {
      out.emplace_back(static_cast<int>(prof - model.profiles.data()), start);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

void IncrementalScheduler::UpsertNode(const NodeView& view) {
  int id = NodeId(view.id);
  std::vector<int> displaced;
  if (id >= 0) {
    NodeRec& rec = nodes_[id];
    bool same = rec.live && rec.view.gpu_model == view.gpu_model && rec.view.fabric == view.fabric &&
                rec.pool >= 0 && index_.NodeGpuCount(rec.index_node) == static_cast<int>(view.gpus.size());
    if (same) {
      // A GPU entering or leaving MIG mode, or a new geometry, is a new shape.
      const int first = index_.NodeFirstGpu(rec.index_node);
      for (size_t i = 0; i < view.gpus.size() && same; ++i) {
        const int gi = first + static_cast<int>(i);
        same = gpus_[gi].view_index == view.gpus[i].index && index_.Fixed(gi) == view.gpus[i].mig &&
               (!view.gpus[i].mig || index_.FixedSlices(gi) == ResolveMigSlices(rec.pool, view.gpus[i]));
      }
    }
    if (same) {
      rec.view.cordoned = view.cordoned;
      rec.view.draining = view.draining;
      if (rec.view.cpu_millis != view.cpu_millis || rec.view.memory_mib != view.memory_mib) ++host_version_;
      rec.view.cpu_millis = view.cpu_millis;
      rec.view.memory_mib = view.memory_mib;
      index_.SetNodeHost(rec.index_node, view.cpu_millis, view.memory_mib);
      const int first = index_.NodeFirstGpu(rec.index_node);
      for (size_t i = 0; i < view.gpus.size(); ++i) {
        GpuRec& g = gpus_[first + i];
        g.view_mask = view.gpus[i].tenant_mask;
        g.owner_busy = view.gpus[i].owner_busy;
        g.offerable = view.gpus[i].offerable;
        g.healthy = view.gpus[i].healthy;
        RefreshGpu(first + static_cast<int>(i));
      }
      return;
    }
    // The node changed shape: rebuild it and re-place the jobs that run on it.
    displaced.assign(rec.jobs.begin(), rec.jobs.end());
    for (int j : displaced) Vacate(j);
    RemoveNode(view.id);
    id = -1;
  }
  NodeRec rec;
  rec.view = view;
  rec.view.gpus.clear();
  rec.live = true;
  rec.pool = PoolFor(view.gpu_model);
  const int rec_id = static_cast<int>(nodes_.size());
  if (rec.pool >= 0) {
    int fabric = -1;
    if (!view.fabric.empty()) {
      auto [it, inserted] = fabric_ids_.emplace(view.fabric, static_cast<int>(fabric_ids_.size()));
      fabric = it->second;
    }
    rec.index_node = index_.AddNode(rec.pool, fabric, static_cast<int>(view.gpus.size()));
    index_.SetNodeHost(rec.index_node, view.cpu_millis, view.memory_mib);
    gpus_.resize(static_cast<size_t>(index_.NodeFirstGpu(rec.index_node)) + view.gpus.size());
    pool_nodes_[rec.pool].push_back(rec_id);
  }
  nodes_.push_back(std::move(rec));
  node_ids_[view.id] = rec_id;
  if (nodes_[rec_id].pool >= 0) {
    const int first = index_.NodeFirstGpu(nodes_[rec_id].index_node);
    for (size_t i = 0; i < view.gpus.size(); ++i) {
      GpuRec& g = gpus_[first + i];
      g.node = rec_id;
      g.view_index = view.gpus[i].index;
      if (view.gpus[i].mig) {
        index_.SetFixedSlices(first + static_cast<int>(i), ResolveMigSlices(nodes_[rec_id].pool, view.gpus[i]));
      }
      g.view_mask = view.gpus[i].tenant_mask;
      g.owner_busy = view.gpus[i].owner_busy;
      g.offerable = view.gpus[i].offerable;
      g.healthy = view.gpus[i].healthy;
      RefreshGpu(first + static_cast<int>(i));
    }
  }
  ++structure_version_;
  gang_feasible_.clear();
  counts_valid_ = false;
  for (int j : displaced) Occupy(j, ResolvePlacements(jobs_[j].view));
}

void IncrementalScheduler::RemoveNode(const std::string& id) {
  const int n = NodeId(id);
  if (n < 0) return;
  NodeRec& rec = nodes_[n];
  // Jobs keep running as far as the scheduler knows; their slots here are gone.
  std::vector<int> on(rec.jobs.begin(), rec.jobs.end());
  for (int j : on) {
    Job& job = jobs_[j];
    std::vector<Slot> keep;
    for (const Slot& s : job.slots) {
      if (gpus_[s.gpu].node != n) keep.push_back(s);
    }
    Vacate(j);
    Occupy(j, keep);
  }
  if (rec.pool >= 0) {
    const int first = index_.NodeFirstGpu(rec.index_node);
    for (int i = 0; i < index_.NodeGpuCount(rec.index_node); ++i) evict_gpus_.erase(first + i);
    index_.RemoveNode(rec.index_node);
    auto& list = pool_nodes_[rec.pool];
    list.erase(std::remove(list.begin(), list.end(), n), list.end());
  }
  rec.live = false;
  node_ids_.erase(id);
  ++structure_version_;
  gang_feasible_.clear();
  counts_valid_ = false;
}

void IncrementalScheduler::RefreshGpu(int gpu) {
  GpuRec& g = gpus_[gpu];
  const NodeRec& node = nodes_[g.node];
  SummarizeOccupants(g);
  index_.SetUsed(gpu, g.view_mask | g.covered);
  const bool usable = node.live && !node.view.cordoned && !node.view.draining && g.healthy &&
                      g.offerable && !g.owner_busy;
  index_.SetUsable(gpu, usable);
  g.evict = g.owner_busy        ? Evict::kOwner
            : !g.healthy        ? Evict::kUnhealthy
            : node.view.draining ? Evict::kDrain
                                 : Evict::kNone;
  if (g.evict != Evict::kNone && node.live) {
    evict_gpus_.insert(gpu);
  } else {
    evict_gpus_.erase(gpu);
  }
}

std::vector<IncrementalScheduler::Slot> IncrementalScheduler::ResolvePlacements(
    const JobView& view) const {
  std::vector<Slot> slots;
  for (const NodePlacement& p : view.placements) {
    const int n = NodeId(p.node_id);
    if (n < 0 || nodes_[n].pool < 0) continue;
    const NodeRec& rec = nodes_[n];
    const GpuModel& model = index_.Model(rec.pool);
    const SliceProfile* prof = model.FindProfile(p.slice_profile);
    uint8_t mask = kFull;
    if (p.gpu_indices.size() == 1 && prof != nullptr && !prof->IsWholeGpu() && p.slot_start >= 0 &&
        p.slot_start + prof->memory_slots <= kMemorySlotsPerGpu) {
      mask = prof->MaskAt(p.slot_start);
    }
    const int first = index_.NodeFirstGpu(rec.index_node);
    for (int gi : p.gpu_indices) {
      for (int i = 0; i < index_.NodeGpuCount(rec.index_node); ++i) {
        if (gpus_[first + i].view_index == gi) {
          slots.push_back(Slot{first + i, mask});
          break;
        }
      }
    }
  }
  return slots;
}

void IncrementalScheduler::Occupy(int job, const std::vector<Slot>& slots) {
  Job& j = jobs_[job];
  j.slots = slots;
  j.on_nodes.clear();
  for (const Slot& s : slots) {
    gpus_[s.gpu].occupants.emplace_back(job, s.mask);
    gpus_[s.gpu].occupant_end.push_back(RawEnd(job));
    const int node = gpus_[s.gpu].node;
    nodes_[node].jobs.insert(job);
    if (j.on_nodes.empty() || j.on_nodes.back() != node) j.on_nodes.push_back(node);
    RefreshGpu(s.gpu);
  }
  for (int node : j.on_nodes) {
    const int in = nodes_[node].index_node;
    const HostDemand charge = index_.HostCharge(in, j.host, UnitsPerNode(j));
    index_.AddHostUse(in, charge, 1);
    j.host_charged.emplace_back(in, charge);
  }
}

template <typename Leaving>
bool IncrementalScheduler::HostFitsAfter(const Job& job, const std::vector<Slot>& slots,
                                         Leaving leaving) const {
  std::vector<int> seen_nodes, gone;
  for (const Slot& s : slots) {
    const int in = index_.GpuNode(s.gpu);
    if (std::find(seen_nodes.begin(), seen_nodes.end(), in) == seen_nodes.end()) seen_nodes.push_back(in);
    for (const auto& [o, om] : gpus_[s.gpu].occupants) {
      if ((om & s.mask) && leaving(o) && std::find(gone.begin(), gone.end(), o) == gone.end()) gone.push_back(o);
    }
  }
  for (int in : seen_nodes) {
    HostDemand released;
    for (int o : gone) AddChargeOn(o, in, &released);
    if (!index_.HostFitsWith(in, job.host, UnitsPerNode(job), released)) return false;
  }
  return true;
}

void IncrementalScheduler::AddChargeOn(int job, int index_node, HostDemand* sum) const {
  for (const auto& [n, c] : jobs_[job].host_charged) {
    if (n != index_node) continue;
    sum->cpu_millis += c.cpu_millis;
    sum->memory_mib += c.memory_mib;
  }
}

void IncrementalScheduler::Vacate(int job) {
  Job& j = jobs_[job];
  for (const Slot& s : j.slots) {
    auto& occ = gpus_[s.gpu].occupants;
    for (size_t i = 0; i < occ.size(); ++i) {
      if (occ[i].first == job) {
        occ.erase(occ.begin() + static_cast<std::ptrdiff_t>(i));
        auto& ends = gpus_[s.gpu].occupant_end;
        ends.erase(ends.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
    }
    nodes_[gpus_[s.gpu].node].jobs.erase(job);
    RefreshGpu(s.gpu);
  }
  for (const auto& [in, charge] : j.host_charged) index_.AddHostUse(in, charge, -1);
  j.host_charged.clear();
  j.slots.clear();
  j.on_nodes.clear();
}

void IncrementalScheduler::AddRunningIndexes(int job) {
  Job& j = jobs_[job];
  if (j.run_pool < 0) return;
  PoolRec& pool = pools_[j.run_pool];
  pool.used_units += j.units;
  if (j.view.preempting) {
    pool.vacating.insert(job);
  } else if (j.view.tier == Tier::kSpot) {
    if (j.view.started_at_ms <= seasoned_cutoff_) {
      pool.running_spot.insert(RunKey{j.view.bid, -j.view.started_at_ms, job});
    } else {
      AddYoung(pool, job, j.view.started_at_ms);
    }
  }
}

void IncrementalScheduler::AddYoung(PoolRec& pool, int job, int64_t started_at_ms) {
  auto& heap = pool.young_spot;
  if (heap.size() >= 2 * pool.young_live + 64) {  // mostly stale (dry rounds leave many): compact
    heap.erase(std::remove_if(heap.begin(), heap.end(),
                              [&](const auto& e) { return jobs_[std::get<2>(e)].young_ticket != std::get<1>(e); }),
               heap.end());
    std::make_heap(heap.begin(), heap.end(), std::greater<>());
  }
  jobs_[job].young_ticket = ++young_tickets_;
  heap.emplace_back(started_at_ms, jobs_[job].young_ticket, job);
  std::push_heap(heap.begin(), heap.end(), std::greater<>());
  ++pool.young_live;
}

void IncrementalScheduler::SeasonSpot(int64_t cutoff) {
  if (cutoff < seasoned_cutoff_) {  // the clock went back or the minimum runtime grew: rare
    for (PoolRec& pool : pools_) {
      for (auto it = pool.running_spot.begin(); it != pool.running_spot.end();) {
        const auto [bid, neg_started, job] = *it;
        if (-neg_started > cutoff) {
          it = pool.running_spot.erase(it);
          AddYoung(pool, job, -neg_started);
        } else {
          ++it;
        }
      }
    }
  }
  seasoned_cutoff_ = cutoff;
  for (PoolRec& pool : pools_) {
    while (!pool.young_spot.empty() && std::get<0>(pool.young_spot.front()) <= cutoff) {
      std::pop_heap(pool.young_spot.begin(), pool.young_spot.end(), std::greater<>());
      const auto [started, ticket, job] = pool.young_spot.back();
      pool.young_spot.pop_back();
      Job& j = jobs_[job];
      if (j.young_ticket != ticket) continue;  // stale
      j.young_ticket = 0;
      --pool.young_live;
      pool.running_spot.insert(RunKey{j.view.bid, -started, job});
    }
  }
}

void IncrementalScheduler::RemoveRunningIndexes(int job) {
  Job& j = jobs_[job];
  if (j.run_pool < 0) return;
  PoolRec& pool = pools_[j.run_pool];
  pool.used_units -= j.units;
  pool.vacating.erase(job);
  pool.running_spot.erase(RunKey{j.view.bid, -j.view.started_at_ms, job});
  if (j.young_ticket != 0) {  // its young_spot entry is stale now
    j.young_ticket = 0;
    --pool.young_live;
  }
}

void IncrementalScheduler::UpsertJob(const JobView& view) {
  bool had = false;
  bool reported = false;
  ReasonKey last_reason;
  Micros last_price = -1;
  if (auto it = job_ids_.find(view.id); it != job_ids_.end()) {
    const Job& old = jobs_[it->second];
    had = true;
    reported = old.reported_reason;
    last_reason = old.last_reason;
    last_price = old.last_price;
    RemoveJob(view.id);
  }
  int idx;
  if (!free_jobs_.empty()) {
    idx = free_jobs_.back();
    free_jobs_.pop_back();
  } else {
    idx = static_cast<int>(jobs_.size());
    jobs_.emplace_back();
  }
  Job& j = jobs_[idx];
  j = Job{};
  j.view = view;
  j.live = true;
  j.tenant = TenantId(view.tenant_id);
  if (had) {
    j.reported_reason = reported && !view.running;
    j.last_reason = last_reason;
    j.last_price = last_price;
  }
  const JobShape& shape = view.shape;
  j.host = HostDemand{std::max<int64_t>(0, shape.cpu_millis), std::max<int64_t>(0, shape.memory_mib)};
  switch (shape.kind) {
    case JobShape::Kind::kSlice: {
      j.kind = ShapeKind::kSlice;
      for (const GpuModel& m : GpuModels()) {
        if (const SliceProfile* p = m.FindProfile(shape.slice_profile)) {
          j.units = p->compute_units;
          if (p->IsWholeGpu()) j.kind = ShapeKind::kWhole;
          break;
        }
      }
      j.gpus_per_node = 1;
      j.nodes = 1;
      break;
    }
    case JobShape::Kind::kWholeGpus:
      j.kind = ShapeKind::kWhole;
      j.gpus_per_node = shape.gpus_per_node;
      j.units = int64_t{kComputeUnitsPerGpu} * shape.gpus_per_node;
      break;
    case JobShape::Kind::kGang:
      j.kind = shape.nodes == 1 ? ShapeKind::kWhole : ShapeKind::kGang;
      j.gpus_per_node = shape.gpus_per_node;
      j.nodes = shape.nodes;
      j.units = int64_t{kComputeUnitsPerGpu} * shape.gpus_per_node * shape.nodes;
      break;
  }
  job_ids_[view.id] = idx;
  max_submit_seq_ = std::max(max_submit_seq_, view.submit_seq);
  if (view.running) {
    Occupy(idx, ResolvePlacements(view));
    j.run_pool = j.slots.empty() ? PoolFor(view.gpu_model) : nodes_[gpus_[j.slots[0].gpu].node].pool;
    if (j.kind == ShapeKind::kSlice && j.run_pool >= 0) {
      const GpuModel& m = index_.Model(j.run_pool);
      if (const SliceProfile* p = m.FindProfile(shape.slice_profile)) {
        j.run_profile = static_cast<int>(p - m.profiles.data());
      }
    }
    AddRunningIndexes(idx);
    tenants_[j.tenant].used_units += j.units;
    ++running_count_;
    price_dirty_.insert(idx);
  } else {
    ++pending_by_model_[view.gpu_model];
    if (!bulk_) {  // a bulk load queues the pending jobs when it ends
      pending_.insert(QueueKey(idx));
      tenants_[j.tenant].pending.insert({view.submit_seq, idx});
    }
  }
  if (counts_valid_) CountShape(j, 1);
}

std::vector<std::string> IncrementalScheduler::JobNodes(const std::string& job_id) const {
  std::vector<std::string> out;
  auto it = job_ids_.find(job_id);
  if (it == job_ids_.end()) return out;
  for (int n : jobs_[it->second].on_nodes) {
    if (std::find(out.begin(), out.end(), nodes_[n].view.id) == out.end()) out.push_back(nodes_[n].view.id);
  }
  return out;
}

void IncrementalScheduler::RemoveJob(const std::string& id) {
  auto it = job_ids_.find(id);
  if (it == job_ids_.end()) return;
  const int idx = it->second;
  Job& j = jobs_[idx];
  if (counts_valid_) CountShape(j, -1);
  if (j.view.running) {
    RemoveRunningIndexes(idx);
    Vacate(idx);
    tenants_[j.tenant].used_units -= j.units;
    --running_count_;
  } else {
    pending_.erase(QueueKey(idx));
    if (--pending_by_model_[j.view.gpu_model] == 0) pending_by_model_.erase(j.view.gpu_model);
    tenants_[j.tenant].pending.erase({j.view.submit_seq, idx});
  }
  j.live = false;
  j.view = JobView{};
  job_ids_.erase(it);
  free_jobs_.push_back(idx);
}

bool IncrementalScheduler::GangFeasible(int pool, int nodes, int gpus_per_node) {
  auto key = std::make_tuple(pool, nodes, gpus_per_node);
  auto it = gang_feasible_.find(key);
  if (it != gang_feasible_.end()) return it->second;
  std::map<int, int> per_fabric;
  bool ok = false;
  for (int n : pool_nodes_[pool]) {
    const int fabric = index_.NodeFabric(nodes_[n].index_node);
    if (fabric < 0 || index_.NodeGpuCount(nodes_[n].index_node) < gpus_per_node) continue;
    if (++per_fabric[fabric] >= nodes) {
      ok = true;
      break;
    }
  }
  gang_feasible_[key] = ok;
  return ok;
}

void IncrementalScheduler::RefreshEligibility(Job& j) {
  if (j.eligible_version == structure_version_) return;
  j.eligible_version = structure_version_;
  j.eligible.clear();
  j.infeasible = ReasonKey{};
  const JobShape& shape = j.view.shape;
  if ((j.kind == ShapeKind::kSlice && j.units == 0) ||
      (j.kind != ShapeKind::kSlice && (j.gpus_per_node <= 0 || j.nodes <= 0))) {
    j.infeasible.why = j.kind == ShapeKind::kSlice ? Why::kNoProfile : Why::kInvalidShape;
    return;
  }
  const GpuModel* want = nullptr;
  if (!j.view.gpu_model.empty()) {
    want = FindGpuModel(j.view.gpu_model);
    if (want == nullptr) {
      j.infeasible.why = Why::kNoModel;
      return;
    }
  }
  bool any_model = false, any_profile = false, any_size = false;
  for (int p = 0; p < static_cast<int>(pools_.size()); ++p) {
    if (pool_nodes_[p].empty()) continue;
    const GpuModel& model = index_.Model(p);
    if (want != nullptr && &model != want) continue;
    any_model = true;
    Eligible e;
    e.pool = p;
    if (j.kind == ShapeKind::kSlice) {
      const SliceProfile* prof = model.FindProfile(shape.slice_profile);
      if (prof == nullptr) continue;
      any_profile = true;
      any_size = true;
      e.profile = static_cast<int>(prof - model.profiles.data());
    } else {
      any_profile = true;
      if (j.gpus_per_node > index_.MaxNodeGpus(p)) continue;
      any_size = true;
      if (j.kind == ShapeKind::kGang && !GangFeasible(p, j.nodes, j.gpus_per_node)) continue;
    }
    j.eligible.push_back(e);
  }
  if (!j.eligible.empty()) return;
  j.infeasible.why = !any_model     ? Why::kNoModel
                     : !any_profile ? Why::kNoProfile
                     : !any_size    ? Why::kTooManyGpus
                                    : Why::kNoFabric;
}

// --- Round ---------------------------------------------------------------------------------

Micros IncrementalScheduler::ReservePrice(int pool) const {
  auto it = market_.reserve_price.find(pools_[pool].model);
  return it == market_.reserve_price.end() ? 0 : it->second;
}

const Micros* IncrementalScheduler::ListPrice(int pool) const {
  auto it = market_.list_price.find(pools_[pool].model);
  return it == market_.list_price.end() ? nullptr : &it->second;
}

Micros IncrementalScheduler::EffectiveBid(const Job& job, int pool) const {
  if (job.view.tier == Tier::kOnDemand) {
    const Micros* list = ListPrice(pool);
    return list ? *list : 0;
  }
  return job.view.bid;
}

bool IncrementalScheduler::FailedShapes::Covers(const ShapeKeyT& key, const HostDemand& host, Micros bid) const {
  auto it = failed.find(std::make_tuple(std::get<0>(key), std::get<1>(key), std::get<2>(key), std::get<3>(key)));
  if (it == failed.end()) return false;
  auto at_least = [](int64_t asked, int64_t failed_with) {
    return asked == failed_with || (failed_with > 0 && asked > failed_with);
  };
  for (const Entry& f : it->second) {
    if (at_least(host.cpu_millis, f.host.cpu_millis) && at_least(host.memory_mib, f.host.memory_mib) &&
        bid <= f.bid) {
      return true;
    }
  }
  return false;
}

void IncrementalScheduler::FailedShapes::Add(const ShapeKeyT& key, const HostDemand& host, Micros bid) {
  auto& list = failed[std::make_tuple(std::get<0>(key), std::get<1>(key), std::get<2>(key), std::get<3>(key))];
  for (Entry& f : list) {
    if (f.host == host) {
      f.bid = std::max(f.bid, bid);
      return;
    }
  }
  list.push_back(Entry{host, bid});
}

IncrementalScheduler::ShapeKeyT IncrementalScheduler::ShapeKey(const Job& job, const Eligible& e) const {
  return {e.pool, static_cast<int>(job.kind), job.kind == ShapeKind::kSlice ? e.profile : job.gpus_per_node,
          job.nodes, job.host.cpu_millis, job.host.memory_mib};
}

bool IncrementalScheduler::HostTooLarge(const Job& job, int pool) {
  if (job.host.cpu_millis <= 0 && job.host.memory_mib <= 0) return false;  // a share always fits
  PoolRec& rec = pools_[pool];
  if (rec.host_sizes_at != std::make_pair(structure_version_, host_version_)) {
    rec.largest_cpu = rec.largest_memory = 0;
    for (int n : pool_nodes_[pool]) {
      const int in = nodes_[n].index_node;
      const int64_t cpu = index_.NodeCpuTotal(in), memory = index_.NodeMemoryTotal(in);
      rec.largest_cpu = cpu == 0 ? kNever : std::max(rec.largest_cpu, cpu);
      rec.largest_memory = memory == 0 ? kNever : std::max(rec.largest_memory, memory);
      if (rec.largest_cpu == kNever && rec.largest_memory == kNever) break;
    }
    rec.host_sizes_at = {structure_version_, host_version_};
  }
  return job.host.cpu_millis > rec.largest_cpu || job.host.memory_mib > rec.largest_memory;
}

bool IncrementalScheduler::HostCanEverFit(const Job& job, int index_node) const {
  return index_.HostFitsWith(index_node, job.host, UnitsPerNode(job), index_.HostUsed(index_node));
}

void IncrementalScheduler::CountShape(Job& j, int sign) {
  auto add = [&](int pool, int profile) {
    PoolRec& rec = pools_[pool];
    if (j.host.cpu_millis > 0) {
      rec.host_cpu += sign * j.host.cpu_millis;
      rec.host_cpu_units += sign * UnitsPerNode(j);
    }
    if (j.host.memory_mib > 0) {
      rec.host_memory += sign * j.host.memory_mib;
      rec.host_memory_units += sign * UnitsPerNode(j);
    }
    if (j.kind == ShapeKind::kSlice) {
      if (profile < 0) return;
      if (static_cast<int>(rec.slice_count.size()) <= profile) rec.slice_count.resize(profile + 1, 0);
      rec.slice_count[profile] += sign;
    } else if (j.gpus_per_node > 0) {
      if (static_cast<int>(rec.whole_count.size()) <= j.gpus_per_node) {
        rec.whole_count.resize(j.gpus_per_node + 1, 0);
      }
      rec.whole_count[j.gpus_per_node] += sign;
    }
  };
  if (j.view.running) {
    if (j.run_pool >= 0) add(j.run_pool, j.run_profile);
    return;
  }
  RefreshEligibility(j);
  for (const Eligible& e : j.eligible) add(e.pool, e.profile);
}

void IncrementalScheduler::SetWeights() {
  if (!counts_valid_) {
    for (PoolRec& rec : pools_) {
      rec.slice_count.clear();
      rec.whole_count.clear();
      rec.host_cpu = rec.host_cpu_units = rec.host_memory = rec.host_memory_units = 0;
    }
    for (Job& j : jobs_) {
      if (!j.live) continue;
      if (!j.view.running) RefreshEligibility(j);
      CountShape(j, 1);
    }
    counts_valid_ = true;
  }
  // Shape popularity per pool over the whole workload (pending and running), with a prior
  // of one job per slice profile and per single whole GPU so an empty queue still prefers
  // keeping GPUs whole.
  for (size_t p = 0; p < pools_.size(); ++p) {
    PoolRec& rec = pools_[p];
    ShapeWeights w;
    w.slice.assign(index_.Model(static_cast<int>(p)).profiles.size(), 1);
    for (size_t i = 0; i < rec.slice_count.size() && i < w.slice.size(); ++i) w.slice[i] += rec.slice_count[i];
    w.whole.assign(static_cast<size_t>(index_.MaxNodeGpus(static_cast<int>(p))) + 1, 0);
    if (w.whole.size() > 1) w.whole[1] = 1;
    for (size_t n = 1; n < rec.whole_count.size() && n < w.whole.size(); ++n) w.whole[n] += rec.whole_count[n];
    w.cpu_millis_per_unit = rec.host_cpu_units > 0 ? rec.host_cpu / rec.host_cpu_units : 0;
    w.memory_mib_per_unit = rec.host_memory_units > 0 ? rec.host_memory / rec.host_memory_units : 0;
    if (w.slice != rec.last_weights.slice || w.whole != rec.last_weights.whole ||
        w.cpu_millis_per_unit != rec.last_weights.cpu_millis_per_unit ||
        w.memory_mib_per_unit != rec.last_weights.memory_mib_per_unit) {
      index_.SetShapeWeights(static_cast<int>(p), w);
      rec.last_weights = std::move(w);
    }
    index_.Refresh(static_cast<int>(p));  // the round's picks weigh the fleet as it starts
  }
}

bool IncrementalScheduler::TryPlace(int job, const Eligible& e, std::vector<Slot>* out) const {
  const Job& j = jobs_[job];
  out->clear();
  switch (j.kind) {
    case ShapeKind::kSlice: {
      auto pick = index_.PickSlice(e.pool, e.profile, j.host);
      if (!pick) return false;
      out->push_back(Slot{pick->gpu, index_.Model(e.pool).profiles[e.profile].MaskAt(pick->start)});
      return true;
    }
    case ShapeKind::kWhole: {
      auto node = index_.PickNode(e.pool, j.gpus_per_node, j.host);
      if (!node) return false;
      for (int g : index_.TakeFullFreeGpus(*node, j.gpus_per_node)) out->push_back(Slot{g, kFull});
      return true;
    }
    case ShapeKind::kGang: {
      std::vector<int> nodes;
      if (!index_.PickGang(e.pool, j.nodes, j.gpus_per_node, &nodes, j.host)) return false;
      for (int n : nodes) {
        for (int g : index_.TakeFullFreeGpus(n, j.gpus_per_node)) out->push_back(Slot{g, kFull});
      }
      return true;
    }
  }
  return false;
}

bool IncrementalScheduler::TryBackfill(int job, const Eligible& e, const ReservationState& res,
                                       std::vector<Slot>* out) const {
  const Job& j = jobs_[job];
  out->clear();
  if (e.pool != res.pool) return false;
  const int units = UnitsPerNode(j);
  if (j.kind == ShapeKind::kSlice) {
    const SliceProfile& prof = index_.Model(e.pool).profiles[e.profile];
    for (int g : res.gpus) {
      if (!index_.HostFits(index_.GpuNode(g), j.host, units)) continue;
      const uint8_t free = static_cast<uint8_t>(~(index_.Used(g) | index_.Held(g)));
      for (int start : prof.starts) {
        if (!index_.Allows(g, e.profile, start)) continue;
        const uint8_t m = prof.MaskAt(start);
        if ((m & free) == m) {
          out->push_back(Slot{g, m});
          return true;
        }
      }
    }
    return false;
  }
  if (j.kind == ShapeKind::kGang) return false;  // gangs do not backfill
  // Whole GPUs: reserved GPUs are grouped by node (ascending ids).
  for (size_t i = 0; i < res.gpus.size();) {
    const int node = index_.GpuNode(res.gpus[i]);
    const bool host_ok = index_.HostFits(node, j.host, units);
    std::vector<Slot> take;
    for (; i < res.gpus.size() && index_.GpuNode(res.gpus[i]) == node; ++i) {
      const int g = res.gpus[i];
      if (!index_.Fixed(g) && (index_.Used(g) | index_.Held(g)) == 0 &&
          static_cast<int>(take.size()) < j.gpus_per_node) {
        take.push_back(Slot{g, kFull});
      }
    }
    if (host_ok && static_cast<int>(take.size()) == j.gpus_per_node) {
      *out = std::move(take);
      return true;
    }
  }
  return false;
}

int64_t IncrementalScheduler::RawEnd(int job) const {
  const Job& j = jobs_[job];
  if (j.view.preempting) return j.view.preempt_deadline_ms > 0 ? j.view.preempt_deadline_ms : -1;
  if (j.view.max_runtime_ms > 0) return j.view.started_at_ms + j.view.max_runtime_ms;
  return kNever;
}

void IncrementalScheduler::RefreshOccupantEnds(int job) {
  const int64_t end = RawEnd(job);
  for (const Slot& s : jobs_[job].slots) {
    GpuRec& g = gpus_[s.gpu];
    for (size_t i = 0; i < g.occupants.size(); ++i) {
      if (g.occupants[i].first == job) g.occupant_end[i] = end;
    }
    SummarizeOccupants(g);
  }
}

void IncrementalScheduler::SummarizeOccupants(GpuRec& g) {
  g.covered = 0;
  g.ends_after_notice = false;
  g.latest_end = INT64_MIN;
  for (size_t i = 0; i < g.occupants.size(); ++i) {
    g.covered |= g.occupants[i].second;
    if (g.occupant_end[i] < 0) {
      g.ends_after_notice = true;
    } else {
      g.latest_end = std::max(g.latest_end, g.occupant_end[i]);
    }
  }
}

int64_t IncrementalScheduler::WholeGpuReady(int g, int64_t now_ms) const {
  const GpuRec& gr = gpus_[g];
  if (index_.Fixed(g)) return kNever;  // a MIG GPU is never given out whole
  // Slots held this round, or taken in the snapshot by no job the scheduler knows, are not
  // foreseen to free up.
  if ((index_.Held(g) | (gr.view_mask & ~gr.covered)) != 0) return kNever;
  int64_t t = std::max(now_ms, gr.latest_end);
  if (gr.ends_after_notice) t = std::max(t, now_ms + market_.preempt_notice_ms);
  return t;
}

int64_t IncrementalScheduler::EndTime(int job, int64_t now_ms) const {
  const Job& j = jobs_[job];
  if (j.view.preempting) {
    return j.view.preempt_deadline_ms > 0 ? std::max(now_ms, j.view.preempt_deadline_ms)
                                          : now_ms + market_.preempt_notice_ms;
  }
  if (j.view.max_runtime_ms > 0) return std::max(now_ms, j.view.started_at_ms + j.view.max_runtime_ms);
  return kNever;
}

int64_t IncrementalScheduler::HostReadyAt(const Job& job, int index_node, int64_t now_ms) const {
  const int units = UnitsPerNode(job);
  if (index_.HostFits(index_node, job.host, units)) return now_ms;
  if (!HostCanEverFit(job, index_node)) return kNever;
  // The node's jobs in the order they end; their host comes back as they do.
  std::vector<std::pair<int64_t, int>>& ends = host_ends_scratch_;
  ends.clear();
  for (int o : nodes_[gpus_[index_.NodeFirstGpu(index_node)].node].jobs) ends.push_back({EndTime(o, now_ms), o});
  std::sort(ends.begin(), ends.end());
  HostDemand released;
  for (const auto& [t, o] : ends) {
    if (t == kNever) return kNever;
    AddChargeOn(o, index_node, &released);
    if (index_.HostFitsWith(index_node, job.host, units, released)) return t;
  }
  return kNever;
}

bool IncrementalScheduler::FindVictims(int job, const Eligible& e, Micros effective_bid,
                                       std::vector<int>* victims,
                                       std::vector<int>* vacating, std::vector<Slot>* hold) {
  const Job& j = jobs_[job];
  PoolRec& pool = pools_[e.pool];
  const int64_t stamp = ++search_stamp_;
  std::vector<int> candidates;
  int counted = 0;
  for (int v : pool.vacating) {
    if (jobs_[v].claimed_round != round_ && counted++ < kMaxVictimCandidates) candidates.push_back(v);
  }
  counted = 0;
  for (const auto& [bid, neg_started, v] : pool.running_spot) {
    // A bid may displace a running spot job only if it beats it by the gap: then the
    // clearing price (>= this blocked bid) exceeds the victim's bid by at least the gap.
    if (bid >= effective_bid || effective_bid - bid < market_.min_preempt_gap) break;
    Job& vj = jobs_[v];
    if (vj.claimed_round == round_) continue;  // young jobs are not in running_spot (SeasonSpot)
    vj.evictable_stamp = stamp;
    candidates.push_back(v);
    if (++counted >= kMaxVictimCandidates) break;
  }
  if (candidates.empty()) return false;

  // -1: cannot be moved; 0: already leaving (vacating); 1: would be preempted.
  auto movable = [&](int o) {
    const Job& oj = jobs_[o];
    if (oj.claimed_round == round_) return -1;
    if (oj.view.preempting) return 0;
    return oj.evictable_stamp == stamp ? 1 : -1;
  };
  // Cost of freeing `mask` on `gpu`; false if something there cannot be moved.
  auto cost_of = [&](int gpu, uint8_t mask, Cost* cost) {
    if (!index_.Usable(gpu) || index_.Reserved(gpu) || (index_.Held(gpu) & mask)) return false;
    uint8_t covered = 0;
    for (const auto& [o, om] : gpus_[gpu].occupants) {
      covered |= om;
      if (!(om & mask)) continue;
      const int m = movable(o);
      if (m < 0) return false;
      if (m == 1) {
        ++cost->victims;
        cost->units += jobs_[o].units;
      }
    }
    return (gpus_[gpu].view_mask & ~covered & mask) == 0;
  };

  std::vector<int> cand_gpus;
  for (int v : candidates) {
    for (const Slot& s : jobs_[v].slots) cand_gpus.push_back(s.gpu);
  }
  std::sort(cand_gpus.begin(), cand_gpus.end());
  cand_gpus.erase(std::unique(cand_gpus.begin(), cand_gpus.end()), cand_gpus.end());

  hold->clear();
  bool found = false;
  Cost best;
  if (j.kind == ShapeKind::kSlice) {
    const SliceProfile& prof = index_.Model(e.pool).profiles[e.profile];
    for (int g : cand_gpus) {
      if (index_.NodePool(index_.GpuNode(g)) != e.pool) continue;
      for (int start : prof.starts) {
        if (!index_.Allows(g, e.profile, start)) continue;
        Cost c;
        if (!cost_of(g, prof.MaskAt(start), &c)) continue;
        if (!HostFitsAfter(j, {Slot{g, prof.MaskAt(start)}}, [&](int o) { return movable(o) >= 0; })) continue;
        if (!found || c < best) {
          found = true;
          best = c;
          *hold = {Slot{g, prof.MaskAt(start)}};
        }
      }
    }
  } else {
    // Per node: the cheapest way to get gpus_per_node whole GPUs there.
    auto node_option = [&](int node, Cost* total, std::vector<Slot>* slots) {
      std::vector<std::pair<Cost, int>> options;
      const int first = index_.NodeFirstGpu(node);
      for (int i = 0; i < index_.NodeGpuCount(node); ++i) {
        Cost c;
        if (!index_.Fixed(first + i) && cost_of(first + i, kFull, &c)) options.push_back({c, first + i});
      }
      if (static_cast<int>(options.size()) < j.gpus_per_node) return false;
      std::stable_sort(options.begin(), options.end(),
                       [](const auto& x, const auto& y) { return x.first < y.first; });
      *total = Cost{};
      slots->clear();
      for (int k = 0; k < j.gpus_per_node; ++k) {
        *total += options[k].first;
        slots->push_back(Slot{options[k].second, kFull});
      }
      return HostFitsAfter(j, *slots, [&](int o) { return movable(o) >= 0; });
    };
    std::vector<int> cand_nodes;
    for (int g : cand_gpus) {
      const int node = index_.GpuNode(g);
      if (index_.NodePool(node) == e.pool) cand_nodes.push_back(node);
    }
    std::sort(cand_nodes.begin(), cand_nodes.end());
    cand_nodes.erase(std::unique(cand_nodes.begin(), cand_nodes.end()), cand_nodes.end());
    if (j.kind == ShapeKind::kWhole) {
      for (int node : cand_nodes) {
        Cost c;
        std::vector<Slot> slots;
        if (!node_option(node, &c, &slots)) continue;
        if (!found || c < best) {
          found = true;
          best = c;
          *hold = std::move(slots);
        }
      }
    } else {
      // Gang: per fabric, the cheapest `nodes` nodes among those with movable jobs and
      // those already free enough.
      std::map<int, std::vector<std::pair<Cost, int>>> by_fabric;
      std::vector<int> with_free;
      std::vector<int> all = cand_nodes;
      index_.NodesWithFullFree(e.pool, -1, j.gpus_per_node, &with_free);
      all.insert(all.end(), with_free.begin(), with_free.end());
      std::sort(all.begin(), all.end());
      all.erase(std::unique(all.begin(), all.end()), all.end());
      for (int node : all) {
        const int fabric = index_.NodeFabric(node);
        if (fabric < 0) continue;
        Cost c;
        std::vector<Slot> slots;
        if (node_option(node, &c, &slots)) by_fabric[fabric].push_back({c, node});
      }
      for (auto& [fabric, options] : by_fabric) {
        if (static_cast<int>(options.size()) < j.nodes) continue;
        std::stable_sort(options.begin(), options.end(),
                         [](const auto& x, const auto& y) { return x.first < y.first; });
        Cost total;
        std::vector<Slot> slots;
        for (int k = 0; k < j.nodes; ++k) {
          Cost c;
          std::vector<Slot> s;
          node_option(options[k].second, &c, &s);
          total += c;
          slots.insert(slots.end(), s.begin(), s.end());
        }
        if (!found || total < best) {
          found = true;
          best = total;
          *hold = std::move(slots);
        }
      }
    }
  }
  if (!found) return false;
  victims->clear();
  vacating->clear();
  for (const Slot& s : *hold) {
    for (const auto& [o, om] : gpus_[s.gpu].occupants) {
      if (!(om & s.mask)) continue;
      (movable(o) == 1 ? victims : vacating)->push_back(o);
    }
  }
  for (auto* list : {victims, vacating}) {
    std::sort(list->begin(), list->end());
    list->erase(std::unique(list->begin(), list->end()), list->end());
    std::sort(list->begin(), list->end(),
              [&](int x, int y) { return jobs_[x].view.id < jobs_[y].view.id; });
  }
  return !victims->empty() || !vacating->empty();
}

std::optional<IncrementalScheduler::ReservationState> IncrementalScheduler::MakeReservation(
    int job, int64_t now_ms) {
  const Job& j = jobs_[job];
  std::optional<ReservationState> best;
  // Orders candidates: earliest start, then most capacity already free, then fixed order.
  std::tuple<int64_t, int, int> best_key{kNever, 0, 0};
  for (const Eligible& e : j.eligible) {
    if (j.view.tier == Tier::kOnDemand ? ListPrice(e.pool) == nullptr : j.view.bid < ReservePrice(e.pool)) {
      continue;
    }
    // Release time of each slot of each offered GPU.
    auto slot_ready = [&](int g, std::array<int64_t, 8>* ready) {
      const uint8_t held = index_.Held(g);
      uint8_t covered = 0;
      ready->fill(now_ms);
      const GpuRec& gr = gpus_[g];
      for (size_t i = 0; i < gr.occupants.size(); ++i) {
        const uint8_t om = gr.occupants[i].second;
        covered |= om;
        const int64_t raw = gr.occupant_end[i];
        const int64_t t = raw < 0 ? now_ms + market_.preempt_notice_ms : std::max(now_ms, raw);
        for (int b = 0; b < 8; ++b) {
          if (om & (1 << b)) (*ready)[b] = std::max((*ready)[b], t);
        }
      }
      const uint8_t blocked = held | (gpus_[g].view_mask & ~covered);
      for (int b = 0; b < 8; ++b) {
        if (blocked & (1 << b)) (*ready)[b] = kNever;
      }
    };
    if (j.kind == ShapeKind::kSlice) {
      const SliceProfile& prof = index_.Model(e.pool).profiles[e.profile];
      for (int n : pool_nodes_[e.pool]) {
        // When the node's host has room: worked out only for a slot that would win.
        int64_t host_ready = -1;
        const int first = index_.NodeFirstGpu(nodes_[n].index_node);
        for (int i = 0; i < index_.NodeGpuCount(nodes_[n].index_node); ++i) {
          const int g = first + i;
          if (!index_.Usable(g) || index_.Reserved(g)) continue;
          std::array<int64_t, 8> ready;
          slot_ready(g, &ready);
          for (int start : prof.starts) {
            if (!index_.Allows(g, e.profile, start)) continue;
            int64_t t = now_ms;
            for (int b = start; b < start + prof.memory_slots; ++b) t = std::max(t, ready[b]);
            if (t == kNever) continue;
            if (best && !(std::tuple<int64_t, int, int>{t, 0, g} < best_key)) continue;
            if (host_ready < 0) host_ready = HostReadyAt(j, nodes_[n].index_node, now_ms);
            t = std::max(t, host_ready);
            if (t == kNever) continue;
            std::tuple<int64_t, int, int> key{t, 0, g};
            if (!best || key < best_key) {
              best_key = key;
              best = ReservationState{job, e.pool, t, {g}};
            }
          }
        }
      }
      continue;
    }
    // Whole GPUs and gangs: per node, when gpus_per_node of its GPUs will be free. The
    // pool is scanned once without allocating; only the chosen nodes' GPUs are listed.
    struct NodeReady {
      int64_t t;
      int neg_free_now;
      int node;  // index node
      int fabric;
      bool operator<(const NodeReady& o) const {
        return std::tie(t, neg_free_now, node) < std::tie(o.t, o.neg_free_now, o.node);
      }
    };
    std::vector<std::pair<int64_t, int>> gpu_ready;  // (ready time, GPU), reused per node
    auto node_gpus_ready = [&](int inode) {
      gpu_ready.clear();
      const int first = index_.NodeFirstGpu(inode);
      for (int i = 0; i < index_.NodeGpuCount(inode); ++i) {
        const int g = first + i;
        if (!index_.Usable(g) || index_.Reserved(g) || index_.Fixed(g)) continue;
        gpu_ready.push_back({WholeGpuReady(g, now_ms), g});
      }
      // Earliest first; GPU order among equals.
      std::sort(gpu_ready.begin(), gpu_ready.end());
    };
    std::vector<NodeReady> nodes_ready;
    for (int n : pool_nodes_[e.pool]) {
      const int inode = nodes_[n].index_node;
      const int fabric = index_.NodeFabric(inode);
      if (j.kind == ShapeKind::kGang && fabric < 0) continue;
      node_gpus_ready(inode);
      if (static_cast<int>(gpu_ready.size()) < j.gpus_per_node) continue;
      const int64_t gpus_at = gpu_ready[j.gpus_per_node - 1].first;
      if (gpus_at == kNever) continue;
      const int64_t host_ready = HostReadyAt(j, inode, now_ms);
      if (host_ready == kNever) continue;
      NodeReady r{std::max(host_ready, gpus_at), 0, inode, j.kind == ShapeKind::kGang ? fabric : -1};
      for (const auto& [t, g] : gpu_ready) r.neg_free_now -= t == now_ms ? 1 : 0;
      nodes_ready.push_back(r);
    }
    // Per fabric (one group for whole-GPU jobs), the j.nodes best nodes.
    std::sort(nodes_ready.begin(), nodes_ready.end(),
              [](const NodeReady& x, const NodeReady& y) { return x.fabric != y.fabric ? x.fabric < y.fabric : x < y; });
    for (size_t lo = 0; lo < nodes_ready.size();) {
      size_t hi = lo;
      while (hi < nodes_ready.size() && nodes_ready[hi].fabric == nodes_ready[lo].fabric) ++hi;
      if (static_cast<int>(hi - lo) >= j.nodes) {
        int64_t t = now_ms;
        int neg_free = 0;
        for (int k = 0; k < j.nodes; ++k) {
          t = std::max(t, nodes_ready[lo + k].t);
          neg_free += nodes_ready[lo + k].neg_free_now;
        }
        std::tuple<int64_t, int, int> key{t, neg_free, nodes_ready[lo].node};
        if (!best || key < best_key) {
          best_key = key;
          std::vector<int> gpus;
          for (int k = 0; k < j.nodes; ++k) {
            node_gpus_ready(nodes_ready[lo + k].node);
            std::vector<int> take;
            for (int q = 0; q < j.gpus_per_node; ++q) take.push_back(gpu_ready[q].second);
            std::sort(take.begin(), take.end());
            gpus.insert(gpus.end(), take.begin(), take.end());
          }
          best = ReservationState{job, e.pool, t, std::move(gpus)};
        }
      }
      lo = hi;
    }
  }
  // Holding capacity with no known start only helps if part of it is free now (it keeps
  // smaller jobs from taking it); otherwise there is nothing to protect yet.
  if (best && best->start_ms == kNever) {
    bool any_free = false;
    for (int g : best->gpus) any_free = any_free || (index_.Used(g) | index_.Held(g)) != kFull;
    if (!any_free) best.reset();
  }
  return best;
}

void IncrementalScheduler::Preempt(int job, PreemptCause cause, std::string reason,
                                   int64_t now_ms, Decisions* out) {
  Job& j = jobs_[job];
  if (undo_ != nullptr) {
    Undo u;
    u.job = job;
    u.preempt_deadline_ms = j.view.preempt_deadline_ms;
    undo_->push_back(std::move(u));
  }
  RemoveRunningIndexes(job);
  j.view.preempting = true;
  j.view.preempt_deadline_ms = now_ms + market_.preempt_notice_ms;
  AddRunningIndexes(job);
  RefreshOccupantEnds(job);
  out->preemptions.push_back(Preemption{j.view.id, cause, std::move(reason)});
}

std::vector<NodePlacement> IncrementalScheduler::ToPlacements(const Job& job,
                                                              const std::vector<Slot>& slots) const {
  std::vector<NodePlacement> out;
  for (const Slot& s : slots) {
    const GpuRec& g = gpus_[s.gpu];
    const NodeRec& node = nodes_[g.node];
    const GpuModel& model = index_.Model(node.pool);
    if (out.empty() || out.back().node_id != node.view.id) {
      NodePlacement p;
      p.node_id = node.view.id;
      if (job.kind == ShapeKind::kSlice) {
        p.slice_profile = job.view.shape.slice_profile;
        p.slot_start = __builtin_ctz(s.mask);
      } else {
        p.slice_profile = model.WholeGpu().name;
      }
      out.push_back(std::move(p));
    }
    out.back().gpu_indices.push_back(g.view_index);
  }
  return out;
}

std::string IncrementalScheduler::ShapeText(const Job& job, int pool) const {
  const std::string model = pool >= 0 ? pools_[pool].model : job.view.gpu_model;
  const std::string host = FormatHostRequest(job.host.cpu_millis, job.host.memory_mib);
  switch (job.kind) {
    case ShapeKind::kSlice:
      return absl::StrCat("no ", job.view.shape.slice_profile, " placement free",
                          host.empty() ? "" : absl::StrCat(" on a node with ", host, " free"));
    case ShapeKind::kWhole:
      return absl::StrCat("no node with ", job.gpus_per_node, " free ", model, " GPU",
                          job.gpus_per_node == 1 ? "" : "s",
                          host.empty() ? "" : absl::StrCat(" and ", host, " free"));
    case ShapeKind::kGang:
      return absl::StrCat("no fabric with ", job.nodes, " nodes x ", job.gpus_per_node, " free ",
                          model, " GPUs", host.empty() ? "" : absl::StrCat(" and ", host, " free"));
  }
  return "";
}

std::string IncrementalScheduler::FormatReason(const Job& job, const ReasonKey& key,
                                               const std::vector<Micros>& clearing) const {
  const std::string model = key.pool >= 0 ? pools_[key.pool].model
                            : job.view.gpu_model.empty() ? std::string("any model")
                                                         : job.view.gpu_model;
  const Tenant& tenant = tenants_[job.tenant];
  switch (key.why) {
    case Why::kNone:
      return "pending";
    case Why::kInvalidShape:
      return "invalid shape: GPUs per node and nodes must be positive";
    case Why::kNoModel:
      return job.view.gpu_model.empty() ? std::string("no GPU nodes")
                                        : absl::StrCat("no node of model ", job.view.gpu_model);
    case Why::kNoProfile:
      return absl::StrCat(job.view.gpu_model.empty() ? std::string("no GPU model")
                                                     : absl::StrCat("GPU model ", model),
                          " has no slice profile ", job.view.shape.slice_profile);
    case Why::kTooManyGpus:
      return absl::StrCat(job.view.gpu_model.empty() ? std::string("no node")
                                                     : absl::StrCat("no node of model ", model),
                          " has ", job.gpus_per_node, " GPUs");
    case Why::kNoFabric:
      return absl::StrCat("no fabric has ", job.nodes, " nodes",
                          job.view.gpu_model.empty() ? std::string() : absl::StrCat(" of model ", model),
                          " with ", job.gpus_per_node, job.gpus_per_node == 1 ? " GPU" : " GPUs",
                          " each");
    case Why::kNoListPrice:
      return absl::StrCat("on-demand is not offered for ", model, " (no list price)");
    case Why::kBelowReserve:
      return absl::StrCat("bid ", FormatUsd(key.a), " below reserve price ", FormatUsd(key.b),
                          " for ", model);
    case Why::kOverGpuQuota: {
      std::string text = absl::StrCat("over quota: tenant ", tenant.name, " has ", GpusText(key.a),
                                      key.a == kComputeUnitsPerGpu ? " GPU" : " GPUs", " (max ", key.b, ")");
      if (key.a < key.b * kComputeUnitsPerGpu) {
        absl::StrAppend(&text, ", job needs ", GpusText(job.units));
      }
      return text;
    }
    case Why::kOverPendingQuota:
      return absl::StrCat("over quota: tenant ", tenant.name, " has ", key.a, " pending jobs (max ",
                          key.b, ")");
    case Why::kNoPlacement:
      return ShapeText(job, key.pool);
    case Why::kHostTooLarge:
      return absl::StrCat("no ", model, " node has ", FormatHostRequest(job.host.cpu_millis, job.host.memory_mib));
    case Why::kOutbid:
      return OutbidReason(key.a, key.b);
    case Why::kWaitingVacate:
      return absl::StrCat("waiting for ", key.a, " preempted job", key.a == 1 ? "" : "s",
                          " to free ", model, " capacity");
    case Why::kWaitingReservation: {
      if (key.a == kNever) {
        return absl::StrCat("waiting for reservation: ", model,
                            " capacity is held for this job until running jobs without a "
                            "declared runtime end");
      }
      const int64_t minutes = (std::max<int64_t>(0, key.a - now_ms_) + 59'999) / 60'000;
      return absl::StrCat("waiting for reservation: ", model,
                          " capacity is held for this job, expected to start in ~", minutes,
                          " min");
    }
  }
  (void)clearing;
  return "pending";
}

Decisions IncrementalScheduler::Round(int64_t now_ms, const RoundOptions& options) {
  ++round_;
  now_ms_ = now_ms;
  SeasonSpot(now_ms - market_.min_runtime_before_preempt_ms);
  Decisions out;
  const int npools = static_cast<int>(pools_.size());

  // 1. The owner, health and drains come first: preempt whatever runs where it may not. A
  //    job spanning several such GPUs gets the strongest cause: owner, health, drain.
  {
    std::vector<std::pair<int, int>> hits;  // job, GPU with the strongest cause so far
    std::map<int, size_t> where;
    auto rank = [](Evict e) { return e == Evict::kOwner ? 3 : e == Evict::kUnhealthy ? 2 : e == Evict::kDrain ? 1 : 0; };
    for (int gpu : evict_gpus_) {
      for (const auto& [job, mask] : gpus_[gpu].occupants) {
        if (jobs_[job].view.preempting) continue;
        auto [it, inserted] = where.emplace(job, hits.size());
        if (inserted) {
          hits.push_back({job, gpu});
        } else if (rank(gpus_[gpu].evict) > rank(gpus_[hits[it->second].second].evict)) {
          hits[it->second].second = gpu;
        }
      }
    }
    // Report in job id order: independent of how the state was built.
    std::sort(hits.begin(), hits.end(), [&](const auto& x, const auto& y) {
      return jobs_[x.first].view.id < jobs_[y.first].view.id;
    });
    for (const auto& [job, gpu] : hits) {
      const GpuRec& g = gpus_[gpu];
      const std::string& node_id = nodes_[g.node].view.id;
      switch (g.evict) {
        case Evict::kOwner:
          Preempt(job, PreemptCause::kOwnerReclaim,
                  absl::StrCat("GPU ", g.view_index, " of node ", node_id, " was reclaimed by its owner"),
                  now_ms, &out);
          break;
        case Evict::kUnhealthy:
          Preempt(job, PreemptCause::kUnhealthy,
                  absl::StrCat("GPU ", g.view_index, " of node ", node_id, " is unhealthy"), now_ms, &out);
          break;
        case Evict::kDrain:
          Preempt(job, PreemptCause::kCordoned, absl::StrCat("node ", node_id, " is being drained"),
                  now_ms, &out);
          break;
        case Evict::kNone:
          break;
      }
    }
  }

  // 2. Workload shape distribution and eligibility.
  SetWeights();
  std::vector<int> pool_rank(static_cast<size_t>(npools));
  {
    std::vector<int> order(static_cast<size_t>(npools));
    for (int p = 0; p < npools; ++p) order[p] = p;
    std::sort(order.begin(), order.end(), [&](int x, int y) {
      return std::make_pair(ReservePrice(x), pools_[x].model) <
             std::make_pair(ReservePrice(y), pools_[y].model);
    });
    for (int r = 0; r < npools; ++r) pool_rank[order[r]] = r;
  }

  // 3. Pending-job quotas: a tenant's jobs beyond max_pending_jobs (by submit order) wait.
  std::vector<int64_t> pending_at_start(tenants_.size());
  for (size_t ti = 0; ti < tenants_.size(); ++ti) {
    Tenant& t = tenants_[ti];
    pending_at_start[ti] = static_cast<int64_t>(t.pending.size());
    if (t.quota.max_pending_jobs <= 0 || static_cast<int>(t.pending.size()) <= t.quota.max_pending_jobs) {
      continue;
    }
    int k = 0;
    for (const auto& [seq, job] : t.pending) {
      if (k++ >= t.quota.max_pending_jobs) jobs_[job].over_pending_round = round_;
    }
  }

  // 4. Admission in order.
  std::vector<Micros> blocked_bid(static_cast<size_t>(npools), 0);
  std::vector<int64_t> waiting_units(tenants_.size(), 0);
  std::vector<std::pair<int, ReasonKey>> reasons;
  // What failed this round, per shape (pool, kind, size), with the host demand and bid it
  // failed with: a job asking at least as much host (0 = the GPU share, matched exactly)
  // fails too, and for victims one bidding no more.
  FailedShapes failed_place, failed_victims;
  // Shapes (over the pools a job may use) no reservation could be made for. Within a round
  // capacity is taken and held, and comes free at a known time only by a notice (cleared
  // then), so such a search would fail again: at fleet scale, with every GPU busy for an
  // unknown time, each blocked job would otherwise scan the whole pool.
  std::set<std::vector<ShapeKeyT>> failed_reserve;
  std::vector<ShapeKeyT> reserve_key;
  std::optional<ReservationState> reservation;
  std::vector<std::pair<int, uint8_t>> held_log;  // gpu, held before
  std::vector<std::pair<size_t, int>> started;    // assignment index, job
  std::vector<std::pair<size_t, int>> outbid;     // preemption index, job
  std::vector<Eligible> cands;
  std::vector<Slot> slots;
  for (auto it = pending_.begin(); it != pending_.end();) {
    const int idx = it->job;
    Job& j = jobs_[idx];
    Tenant& tenant = tenants_[j.tenant];
    ReasonKey why;
    bool placed = false;
    RefreshEligibility(j);
    if (j.over_pending_round == round_) {
      why = {Why::kOverPendingQuota, -1, pending_at_start[j.tenant],
             tenant.quota.max_pending_jobs};
    } else if (j.eligible.empty()) {
      why = j.infeasible;
    } else {
      cands.clear();
      ReasonKey filtered;
      for (const Eligible& e : j.eligible) {
        if (j.view.tier == Tier::kOnDemand) {
          if (ListPrice(e.pool) == nullptr) {
            if (filtered.why == Why::kNone) filtered = {Why::kNoListPrice, e.pool, 0, 0};
            continue;
          }
        } else if (const Micros reserve = ReservePrice(e.pool); j.view.bid < reserve) {
          if (filtered.why == Why::kNone) filtered = {Why::kBelowReserve, e.pool, j.view.bid, reserve};
          continue;
        }
        cands.push_back(e);
      }
      std::sort(cands.begin(), cands.end(),
                [&](const Eligible& x, const Eligible& y) { return pool_rank[x.pool] < pool_rank[y.pool]; });
      const int64_t used = tenant.used_units + waiting_units[j.tenant];
      if (cands.empty()) {
        why = filtered;
      } else if (tenant.quota.max_gpus > 0 &&
                 used + j.units > int64_t{tenant.quota.max_gpus} * kComputeUnitsPerGpu) {
        why = {Why::kOverGpuQuota, -1, used, tenant.quota.max_gpus};
      } else {
        const Eligible* where = nullptr;
        for (const Eligible& e : cands) {
          const auto key = ShapeKey(j, e);
          if (failed_place.Covers(key, j.host, 0)) continue;
          if (TryPlace(idx, e, &slots)) {
            where = &e;
            break;
          }
          failed_place.Add(key, j.host, 0);
        }
        // Backfill into the reservation only what surely ends before it starts.
        if (where == nullptr && reservation && j.view.max_runtime_ms > 0 &&
            now_ms + j.view.max_runtime_ms <= reservation->start_ms) {
          for (const Eligible& e : cands) {
            if (TryBackfill(idx, e, *reservation, &slots)) {
              where = &e;
              break;
            }
          }
        }
        if (where != nullptr) {
          // Start it: from here on it is running on `slots`.
          if (undo_ != nullptr) {
            Undo u;
            u.job = idx;
            u.started = true;
            u.view = j.view;
            u.run_pool = j.run_pool;
            u.run_profile = j.run_profile;
            u.reported_reason = j.reported_reason;
            u.started_round = j.started_round;
            undo_->push_back(std::move(u));
          }
          CountShape(j, -1);
          j.view.running = true;
          j.view.started_at_ms = now_ms;
          j.view.placements = ToPlacements(j, slots);
          j.run_pool = where->pool;
          j.run_profile = where->profile;
          j.reported_reason = false;
          j.started_round = round_;
          tenant.pending.erase({j.view.submit_seq, idx});
          if (--pending_by_model_[j.view.gpu_model] == 0) pending_by_model_.erase(j.view.gpu_model);
          Occupy(idx, slots);
          AddRunningIndexes(idx);
          CountShape(j, 1);
          tenant.used_units += j.units;
          ++running_count_;
          started.push_back({out.assignments.size(), idx});
          out.assignments.push_back(Assignment{j.view.id, j.view.placements, 0});
          placed = true;
        } else {
          // Blocked. Displace lower bids if the rules allow, else reserve, else wait.
          bool waiting = false;
          std::vector<int> victims, vacating;
          for (const Eligible& e : cands) {
            const Micros eff = EffectiveBid(j, e.pool);
            const auto key = ShapeKey(j, e);
            if (failed_victims.Covers(key, j.host, eff)) continue;
            if (!FindVictims(idx, e, eff, &victims, &vacating, &slots)) {
              failed_victims.Add(key, j.host, eff);
              continue;
            }
            // A notice makes the rest of a victim's capacity come free at a known time.
            if (!victims.empty()) failed_reserve.clear();
            for (int v : victims) {
              outbid.push_back({out.preemptions.size(), v});
              Preempt(v, PreemptCause::kOutbid, "", now_ms, &out);
              jobs_[v].claimed_round = round_;
            }
            for (int v : vacating) jobs_[v].claimed_round = round_;
            for (const Slot& s : slots) {
              held_log.push_back({s.gpu, index_.Held(s.gpu)});
              index_.SetHeld(s.gpu, index_.Held(s.gpu) | s.mask);
            }
            waiting_units[j.tenant] += j.units;
            blocked_bid[e.pool] = std::max(blocked_bid[e.pool], eff);
            why = {Why::kWaitingVacate, e.pool, static_cast<int64_t>(victims.size() + vacating.size()), 0};
            waiting = true;
            break;
          }
          if (!waiting) {
            for (const Eligible& e : cands) {
              blocked_bid[e.pool] = std::max(blocked_bid[e.pool], EffectiveBid(j, e.pool));
            }
            why = {Why::kNoPlacement, cands.front().pool, 0, 0};
            if (std::all_of(cands.begin(), cands.end(), [&](const Eligible& e) { return HostTooLarge(j, e.pool); })) {
              why = {Why::kHostTooLarge, cands.front().pool, 0, 0};
            } else if (!reservation) {
              reserve_key.clear();
              for (const Eligible& e : cands) reserve_key.push_back(ShapeKey(j, e));
              std::sort(reserve_key.begin(), reserve_key.end());
              if (!failed_reserve.count(reserve_key)) {
                reservation = MakeReservation(idx, now_ms);
                if (!reservation) failed_reserve.insert(reserve_key);
              }
              if (reservation) {
                for (int g : reservation->gpus) index_.SetReserved(g, true);
                why = {Why::kWaitingReservation, reservation->pool, reservation->start_ms, 0};
              }
            }
          }
        }
      }
    }
    if (placed) {
      it = pending_.erase(it);
      continue;
    }
    reasons.push_back({idx, why});
    ++it;
  }

  // 5. Prices.
  std::vector<Micros> clearing(static_cast<size_t>(npools));
  for (int p = 0; p < npools; ++p) clearing[p] = std::max(ReservePrice(p), blocked_bid[p]);
  auto price_of = [&](const Job& j) -> Micros {
    if (j.view.tier == Tier::kOnDemand) {
      const Micros* list = j.run_pool >= 0 ? ListPrice(j.run_pool) : nullptr;
      return list ? *list : 0;
    }
    return j.run_pool >= 0 ? std::min(clearing[j.run_pool], j.view.bid) : j.view.bid;
  };
  const bool dry = undo_ != nullptr;
  for (const auto& [a, idx] : started) {
    out.assignments[a].price = price_of(jobs_[idx]);
    if (!dry) jobs_[idx].last_price = out.assignments[a].price;
  }
  for (const auto& [p, idx] : outbid) {
    const Job& j = jobs_[idx];
    out.preemptions[p].reason = OutbidReason(clearing[j.run_pool], j.view.bid);
  }
  // Reports are collected, sorted by id and appended in order: map inserts at the end are
  // O(1) where tens of thousands of random inserts would dominate a steady round.
  std::vector<std::pair<const std::string*, PendingReason>> reason_out;
  std::vector<std::pair<const std::string*, Micros>> price_out;
  auto by_id = [](const auto& x, const auto& y) { return *x.first < *y.first; };
  for (auto& [idx, why] : reasons) {
    Job& j = jobs_[idx];
    if (dry && idx != dry_candidate_) continue;  // a dry round reports only its candidate
    if (why.why == Why::kNoPlacement && j.view.tier == Tier::kSpot && j.view.bid < clearing[why.pool]) {
      why = {Why::kOutbid, why.pool, clearing[why.pool], j.view.bid};
    }
    if (dry) {
      reason_out.push_back({&j.view.id, PendingReason{FormatReason(j, why, clearing),
                                                      why.why == Why::kOutbid ? pools_[why.pool].model : ""}});
      continue;
    }
    if (options.full_report || !j.reported_reason || !SameReport(j.last_reason, why)) {
      reason_out.push_back({&j.view.id, PendingReason{FormatReason(j, why, clearing),
                                                      why.why == Why::kOutbid ? pools_[why.pool].model : ""}});
      j.reported_reason = true;
      j.last_reason = why;
    }
  }
  auto report_price = [&](int idx) {
    Job& j = jobs_[idx];
    if (!j.live || !j.view.running || j.view.preempting) return;
    if (j.started_round == round_) return;  // its price is on the assignment
    const Micros price = price_of(j);
    if (options.full_report || price != j.last_price) {
      price_out.push_back({&j.view.id, price});
      j.last_price = price;
    }
  };
  if (dry) {
    // Nothing to report: what was last reported stays as it is.
  } else if (options.full_report || market_changed_ || last_clearing_.size() != clearing.size()) {
    for (size_t idx = 0; idx < jobs_.size(); ++idx) report_price(static_cast<int>(idx));
  } else {
    // Only prices that can have moved: jobs loaded since the last round, and, as one
    // repricing per pool, the spot jobs of a pool whose clearing price moved (whose
    // last_price is then what price_of() gives; a stale one only causes a repeat report).
    for (int idx : price_dirty_) report_price(idx);
    for (int p = 0; p < npools; ++p) {
      if (clearing[p] == last_clearing_[p]) continue;
      out.repriced_pools.push_back(PoolRepricing{pools_[p].model, clearing[p]});
    }
  }
  if (!dry) {
    price_dirty_.clear();
    last_clearing_ = clearing;
    market_changed_ = false;
  }
  std::sort(reason_out.begin(), reason_out.end(), by_id);
  for (auto& [id, reason] : reason_out) {
    out.pending_reasons.emplace_hint(out.pending_reasons.end(), *id, std::move(reason));
  }
  std::sort(price_out.begin(), price_out.end(), by_id);
  for (const auto& [id, price] : price_out) out.running_prices.emplace_hint(out.running_prices.end(), *id, price);
  for (const auto& [model, p] : pool_ids_) {
    if (pool_nodes_[p].empty()) continue;
    int64_t pending = 0;
    for (const auto& [want, count] : pending_by_model_) {
      if (want.empty()) {
        pending += count;
      } else if (const GpuModel* m = FindGpuModel(want); m != nullptr && m->name == model) {
        pending += count;
      }
    }
    out.prices.push_back(PoolPrice{model, clearing[p], index_.UsableGpus(p) * kComputeUnitsPerGpu,
                                   pools_[p].used_units, pending});
  }
  if (reservation) {
    Reservation r;
    r.job_id = jobs_[reservation->job].view.id;
    r.start_ms = reservation->start_ms;
    std::vector<Slot> res_slots;
    for (int g : reservation->gpus) res_slots.push_back(Slot{g, kFull});
    r.placements = ToPlacements(Job{}, res_slots);
    out.reservations.push_back(std::move(r));
  }

  // 6. Round-scoped holds end here; the index again describes the fleet as it is.
  for (auto it = held_log.rbegin(); it != held_log.rend(); ++it) index_.SetHeld(it->first, it->second);
  if (reservation) {
    for (int g : reservation->gpus) index_.SetReserved(g, false);
  }
  return out;
}

Decisions IncrementalScheduler::DryRound(int64_t now_ms, const std::optional<JobView>& candidate) {
  assert(undo_ == nullptr);
  std::vector<Undo> log;
  const int64_t max_seq = max_submit_seq_;
  const int64_t saved_now = now_ms_;
  dry_candidate_ = -1;
  const bool add = candidate.has_value() && job_ids_.find(candidate->id) == job_ids_.end();
  if (add) {
    JobView view = *candidate;
    view.running = false;
    view.preempting = false;
    view.placements.clear();
    view.submit_seq = max_seq + 1;
    UpsertJob(view);
    dry_candidate_ = job_ids_.at(view.id);
  }
  undo_ = &log;
  Decisions d = Round(now_ms);
  undo_ = nullptr;
  UndoDryRound(log);
  if (add) RemoveJob(jobs_[dry_candidate_].view.id);
  dry_candidate_ = -1;
  max_submit_seq_ = max_seq;
  now_ms_ = saved_now;
  return d;
}

void IncrementalScheduler::UndoDryRound(const std::vector<Undo>& log) {
  for (auto u = log.rbegin(); u != log.rend(); ++u) {
    Job& j = jobs_[u->job];
    if (!u->started) {  // the inverse of Preempt()
      RemoveRunningIndexes(u->job);
      j.view.preempting = false;
      j.view.preempt_deadline_ms = u->preempt_deadline_ms;
      AddRunningIndexes(u->job);
      RefreshOccupantEnds(u->job);
      continue;
    }
    // The inverse of starting it in Round().
    Tenant& tenant = tenants_[j.tenant];
    CountShape(j, -1);
    tenant.used_units -= j.units;
    --running_count_;
    RemoveRunningIndexes(u->job);
    Vacate(u->job);
    j.view = u->view;
    j.run_pool = u->run_pool;
    j.run_profile = u->run_profile;
    j.reported_reason = u->reported_reason;
    j.started_round = u->started_round;
    pending_.insert(QueueKey(u->job));
    ++pending_by_model_[j.view.gpu_model];
    tenant.pending.insert({j.view.submit_seq, u->job});
    CountShape(j, 1);
  }
}

std::string IncrementalScheduler::NodeModel(const std::string& node_id) const {
  const int n = NodeId(node_id);
  return n < 0 ? std::string() : nodes_[n].view.gpu_model;
}

}  // namespace surplus::scheduler
