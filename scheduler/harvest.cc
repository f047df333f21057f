#include "scheduler/harvest.h"

#include <algorithm>

namespace surplus::scheduler {

void HarvestTracker::Transition(const GpuRef& gpu, Rec& rec, bool was_busy, int64_t now_ms) {
  const bool busy = rec.Busy();
  if (busy && !was_busy) reclaimed_.push_back(gpu);
  if (!busy && was_busy) rec.idle_since_ms = now_ms;
}

void HarvestTracker::Observe(const GpuObservation& obs) {
  auto [it, inserted] = gpus_.try_emplace(obs.gpu);
  Rec& rec = it->second;
  if (inserted) {
    // First sight: we do not know for how long it has been idle, so the window starts now.
    rec.telemetry_busy = obs.owner_busy;
    rec.last_obs_ms = obs.now_ms;
    rec.idle_since_ms = obs.now_ms;
    return;
  }
  if (obs.now_ms < rec.last_obs_ms) return;
  const bool was_busy = rec.Busy();
  rec.telemetry_busy = obs.owner_busy;
  rec.last_obs_ms = obs.now_ms;
  Transition(obs.gpu, rec, was_busy, obs.now_ms);
}

void HarvestTracker::Reclaim(const GpuRef& gpu, int64_t now_ms) {
  auto [it, inserted] = gpus_.try_emplace(gpu);
  Rec& rec = it->second;
  const bool was_busy = !inserted && rec.Busy();
  if (inserted) rec.idle_since_ms = now_ms;
  rec.reclaimed = true;
  Transition(gpu, rec, was_busy, now_ms);
}

void HarvestTracker::Release(const GpuRef& gpu, int64_t now_ms) {
  auto it = gpus_.find(gpu);
  if (it == gpus_.end() || !it->second.reclaimed) return;
  const bool was_busy = it->second.Busy();
  it->second.reclaimed = false;
  Transition(gpu, it->second, was_busy, now_ms);
}

void HarvestTracker::Sync(const GpuRef& gpu, const OwnerRecord& record, int64_t now_ms) {
  auto [it, inserted] = gpus_.try_emplace(gpu);
  Rec& rec = it->second;
  const bool was_busy = !inserted && rec.Busy();
  rec.telemetry_busy = record.telemetry_busy;
  rec.reclaimed = record.reclaimed;
  rec.last_obs_ms = std::max(rec.last_obs_ms, now_ms);
  if (rec.Busy()) {
    if (inserted || !was_busy) reclaimed_.push_back(gpu);
  } else if (inserted || was_busy || record.idle_since_ms > 0) {
    rec.idle_since_ms = record.idle_since_ms > 0 ? record.idle_since_ms : now_ms;
  }
}

void HarvestTracker::SyncNode(const std::vector<OwnerRecord>& records, int64_t now_ms, NodeView* node) {
  for (size_t i = 0; i < node->gpus.size() && i < records.size(); ++i) {
    GpuView& g = node->gpus[i];
    const GpuRef ref{node->id, g.index};
    Sync(ref, records[i], now_ms);
    const GpuHarvestState s = State(ref, now_ms);
    g.owner_busy = s.owner_busy;
    g.offerable = s.offerable;
  }
}

void HarvestTracker::ForgetNode(const std::string& node_id) {
  auto it = gpus_.lower_bound(GpuRef{node_id, INT32_MIN});
  while (it != gpus_.end() && it->first.node_id == node_id) it = gpus_.erase(it);
  reclaimed_.erase(std::remove_if(reclaimed_.begin(), reclaimed_.end(),
                                  [&](const GpuRef& g) { return g.node_id == node_id; }),
                   reclaimed_.end());
}

GpuHarvestState HarvestTracker::State(const GpuRef& gpu, int64_t now_ms) const {
  GpuHarvestState s;
  auto it = gpus_.find(gpu);
  if (it == gpus_.end()) return s;
  const Rec& rec = it->second;
  s.known = true;
  s.owner_busy = rec.Busy();
  s.idle_since_ms = rec.idle_since_ms;
  s.offerable = !s.owner_busy && now_ms - rec.idle_since_ms >= config_.idle_window_ms;
  return s;
}

std::vector<GpuRef> HarvestTracker::TakeReclaimed() {
  std::vector<GpuRef> out;
  out.swap(reclaimed_);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  // Report only those still busy: a reclaim released before anyone looked needs no action.
  out.erase(std::remove_if(out.begin(), out.end(),
                           [&](const GpuRef& g) {
                             auto it = gpus_.find(g);
                             return it == gpus_.end() || !it->second.Busy();
                           }),
            out.end());
  return out;
}

void HarvestTracker::Apply(int64_t now_ms, std::vector<NodeView>* nodes) const {
  for (NodeView& n : *nodes) {
    for (GpuView& g : n.gpus) {
      const GpuHarvestState s = State(GpuRef{n.id, g.index}, now_ms);
      g.owner_busy = s.owner_busy;
      g.offerable = s.offerable;
    }
  }
}

std::optional<int64_t> HarvestTracker::NextOfferable(int64_t now_ms) const {
  std::optional<int64_t> next;
  for (const auto& [gpu, rec] : gpus_) {
    if (rec.Busy()) continue;
    const int64_t at = rec.idle_since_ms + config_.idle_window_ms;
    if (at > now_ms && (!next || at < *next)) next = at;
  }
  return next;
}

}  // namespace surplus::scheduler
