#include "src/api/context.h"

#include "scheduler/harvest.h"
#include "src/store/scheduler_feed.h"

namespace surplus::api {

scheduler::MarketConfig MarketFromStore(const scheduler::MarketConfig& base, const store::FeedRead& read) {
  scheduler::MarketConfig m = base;
  for (const auto& [model, price] : read.reserve_prices) m.reserve_price[model] = price;
  m.quotas = read.quotas;
  return m;
}

absl::StatusOr<scheduler::Snapshot> LoadSnapshot(const ApiContext& ctx, int64_t now_ms) {
  store::PgSchedulerFeed feed(*ctx.pool);
  auto read = feed.ReadAll();
  if (!read.ok()) return read.status();
  scheduler::Snapshot snap;
  snap.now_ms = now_ms;
  snap.market = MarketFromStore(ctx.config.market, *read);
  scheduler::HarvestTracker harvest(scheduler::HarvestConfig{ctx.config.harvest.owner_idle_window_ms});
  snap.nodes.reserve(read->nodes.size());
  for (auto& n : read->nodes) {
    harvest.SyncNode(n.owner, now_ms, &n.view);
    snap.nodes.push_back(std::move(n.view));
  }
  snap.jobs = std::move(read->jobs);
  return snap;
}

}  // namespace surplus::api
