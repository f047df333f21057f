#include "src/api/capacity.h"

#include <map>
#include <string>

namespace surplus::api {
namespace v1 = surplus::v1;

void AddNodeHost(const v1::Node& node, v1::PoolCapacity* pool) {
  pool->set_cpu_millis_total(pool->cpu_millis_total() + node.cpu_millis());
  pool->set_cpu_millis_used(pool->cpu_millis_used() + node.cpu_millis_used());
  pool->set_memory_mib_total(pool->memory_mib_total() + node.memory_mib());
  pool->set_memory_mib_used(pool->memory_mib_used() + node.memory_mib_used());
}

absl::StatusOr<CapacityView> LoadCapacity(const ApiContext& ctx, int64_t now_ms) {
  auto nodes = ctx.nodes->ListNodes(ctx.config.harvest, now_ms);
  if (!nodes.ok()) return nodes.status();
  auto prices = ctx.market->LatestPrices();
  if (!prices.ok()) return prices.status();
  auto reserve = ctx.market->ReservePrices();
  if (!reserve.ok()) return reserve.status();
  auto jobs = ctx.jobs->ActiveJobs();
  if (!jobs.ok()) return jobs.status();
  std::map<std::string, v1::PoolCapacity> pools;
  std::map<std::string, std::string> node_model;
  for (const auto& n : *nodes) {
    node_model[n.name()] = n.gpu_model();
    v1::PoolCapacity& pool = pools[n.gpu_model()];
    pool.set_gpu_model(n.gpu_model());
    AddNodeHost(n, &pool);
    for (const auto& g : n.gpus()) {
      pool.set_gpus_total(pool.gpus_total() + 1);
      if (g.use() == v1::GPU_USE_OWNER_BUSY) pool.set_gpus_owner_busy(pool.gpus_owner_busy() + 1);
      if (g.use() == v1::GPU_USE_UNAVAILABLE) pool.set_gpus_unavailable(pool.gpus_unavailable() + 1);
      if (g.use() == v1::GPU_USE_IDLE || g.use() == v1::GPU_USE_SOLD) {
        pool.set_units_offered(pool.units_offered() + kComputeUnitsPerGpu);
      }
    }
  }
  for (const auto& j : *jobs) {
    std::string model = j.gpu_model;
    if (j.running && !j.placements.empty()) model = node_model[j.placements[0].node_id];
    auto it = pools.find(model);
    if (it == pools.end()) continue;
    v1::PoolCapacity& pool = it->second;
    if (!j.running) {
      pool.set_jobs_pending(pool.jobs_pending() + 1);
      continue;
    }
    pool.set_jobs_running(pool.jobs_running() + 1);
    const GpuModel* gm = FindGpuModel(model);
    for (const auto& pl : j.placements) {
      const int64_t units = PlacementUnitsPerGpu(gm, pl.slice_profile);
      pool.set_units_sold(pool.units_sold() + units * static_cast<int64_t>(pl.gpu_indices.size()));
    }
  }
  CapacityView view;
  for (auto& [model, pool] : pools) {
    auto r = reserve->find(model);
    pool.set_reserve_price_micros_per_gpu_hour(r == reserve->end() ? 0 : r->second);
    auto pr = prices->find(model);
    pool.set_clearing_price_micros_per_gpu_hour(pr == prices->end() ? pool.reserve_price_micros_per_gpu_hour()
                                                                   : pr->second.clearing);
    *view.capacity.add_pools() = pool;
  }
  SetTimestampMs(now_ms, view.capacity.mutable_as_of());
  view.nodes = std::move(*nodes);
  return view;
}

}  // namespace surplus::api
