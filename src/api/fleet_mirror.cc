#include "src/api/fleet_mirror.h"

namespace surplus::api {
namespace {

// `base` (configured market settings) with the reserve prices and quotas of `read`.
scheduler::MarketConfig MarketFromStore(const scheduler::MarketConfig& base, const store::FeedRead& read) {
  scheduler::MarketConfig m = base;
  for (const auto& [model, price] : read.reserve_prices) m.reserve_price[model] = price;
  m.quotas = read.quotas;
  return m;
}

bool SameMarket(const scheduler::MarketConfig& a, const scheduler::MarketConfig& b) {
  return a.reserve_price == b.reserve_price && a.list_price == b.list_price && a.quotas == b.quotas &&
         a.min_preempt_gap == b.min_preempt_gap &&
         a.min_runtime_before_preempt_ms == b.min_runtime_before_preempt_ms &&
         a.preempt_notice_ms == b.preempt_notice_ms;
}

}  // namespace

FleetMirror::FleetMirror(const ApiContext& ctx)
    : ctx_(ctx),
      feed_(*ctx.pool),
      harvest_(scheduler::HarvestConfig{ctx.config.harvest.owner_idle_window_ms}) {}

absl::StatusOr<FleetMirror::Refreshed> FleetMirror::Refresh(int64_t now_ms) {
  auto read = engine_ ? feed_.ReadChanges() : feed_.ReadAll();
  if (!read.ok()) {
    Reset();
    return read.status();
  }
  Refreshed r;
  r.full = read->full || !engine_;
  r.rows = static_cast<int64_t>(read->nodes.size() + read->gone_nodes.size() + read->jobs.size() +
                                read->ended_jobs.size());
  Absorb(std::move(*read), now_ms);
  r.reclaimed = harvest_.TakeReclaimed();
  return r;
}

void FleetMirror::Clear() {
  engine_.reset();
  nodes_.clear();
  offerable_at_.clear();
  harvest_ = scheduler::HarvestTracker(harvest_.config());
}

void FleetMirror::Reset() {
  Clear();
  feed_.Reset();
}

scheduler::NodeView FleetMirror::NodeNow(const store::StoredNode& node, int64_t now_ms) {
  scheduler::NodeView view = node.view;
  harvest_.SyncNode(node.owner, now_ms, &view);
  for (const auto& g : view.gpus) {
    if (g.owner_busy || g.offerable) continue;
    const auto st = harvest_.State(scheduler::GpuRef{view.id, g.index}, now_ms);
    offerable_at_.emplace(st.idle_since_ms + harvest_.config().idle_window_ms, view.id);
  }
  return view;
}

void FleetMirror::Absorb(store::FeedRead read, int64_t now_ms) {
  scheduler::MarketConfig market = MarketFromStore(ctx_.config.market, read);
  if (read.full || !engine_) {
    Clear();  // the feed continues from this read
    scheduler::Snapshot snap;
    snap.now_ms = now_ms;
    snap.market = market;
    snap.nodes.reserve(read.nodes.size());
    for (auto& n : read.nodes) {
      snap.nodes.push_back(NodeNow(n, now_ms));
      const std::string id = n.view.id;
      nodes_[id] = std::move(n);
    }
    snap.jobs = std::move(read.jobs);
    engine_ = std::make_unique<scheduler::IncrementalScheduler>(snap);
    market_ = std::move(market);
    return;
  }
  scheduler::SnapshotDelta delta;
  if (!SameMarket(market, market_)) {
    delta.market = market;
    market_ = std::move(market);
  }
  std::set<std::string> upserted;
  for (const auto& id : read.gone_nodes) {
    if (nodes_.erase(id) == 0) continue;
    harvest_.ForgetNode(id);
    delta.remove_nodes.push_back(id);
  }
  for (auto& n : read.nodes) {
    const std::string id = n.view.id;
    delta.upsert_nodes.push_back(NodeNow(n, now_ms));
    nodes_[id] = std::move(n);
    upserted.insert(id);
  }
  // Idle GPUs whose harvest window ended since the previous refresh are offered now.
  while (!offerable_at_.empty() && offerable_at_.begin()->first <= now_ms) {
    const std::string id = offerable_at_.begin()->second;
    offerable_at_.erase(offerable_at_.begin());
    auto it = nodes_.find(id);
    if (it == nodes_.end() || !upserted.insert(id).second) continue;
    delta.upsert_nodes.push_back(NodeNow(it->second, now_ms));
  }
  delta.upsert_jobs = std::move(read.jobs);
  delta.remove_jobs = std::move(read.ended_jobs);
  engine_->ApplyDelta(delta);
}

}  // namespace surplus::api
