#include "src/api/context.h"

#include <map>

#include "absl/strings/str_cat.h"

namespace surplus::api {

absl::StatusOr<scheduler::Snapshot> LoadSnapshot(const ApiContext& ctx, int64_t now_ms) {
  scheduler::Snapshot snap;
  snap.now_ms = now_ms;
  auto nodes = ctx.nodes->SchedulerNodes(ctx.config.harvest, now_ms);
  if (!nodes.ok()) return nodes.status();
  auto jobs = ctx.jobs->ActiveJobs();
  if (!jobs.ok()) return jobs.status();
  auto reserve = ctx.market->ReservePrices();
  if (!reserve.ok()) return reserve.status();
  auto tenants = ctx.auth_store->ListTenants();
  if (!tenants.ok()) return tenants.status();
  snap.nodes = std::move(*nodes);
  snap.jobs = std::move(*jobs);
  snap.market = ctx.config.market;
  for (const auto& [model, price] : *reserve) snap.market.reserve_price[model] = price;
  for (const auto& t : *tenants) {
    if (t.max_gpus() > 0 || t.max_pending_jobs() > 0) {
      snap.market.quotas[t.id()] = scheduler::TenantQuota{t.max_gpus(), t.max_pending_jobs()};
    }
  }
  // Occupancy of running jobs' placements.
  std::map<std::string, scheduler::NodeView*> by_id;
  for (auto& n : snap.nodes) by_id[n.id] = &n;
  for (const auto& j : snap.jobs) {
    if (!j.running) continue;
    for (const auto& p : j.placements) {
      auto it = by_id.find(p.node_id);
      if (it == by_id.end()) continue;
      const GpuModel* model = FindGpuModel(it->second->gpu_model);
      const SliceProfile* profile = model ? model->FindProfile(p.slice_profile) : nullptr;
      for (int idx : p.gpu_indices) {
        for (auto& g : it->second->gpus) {
          if (g.index != idx) continue;
          g.tenant_mask |= profile ? profile->MaskAt(p.slot_start) : kFullGpuMask;
        }
      }
    }
  }
  return snap;
}

}  // namespace surplus::api
