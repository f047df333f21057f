#pragma once
// FleetMirror: the scheduling engine's view of the fleet, kept between uses and brought up
// to date from the change feed (PgSchedulerFeed): one full read at first, then only the rows
// that changed since the previous read, applied to the engine as a delta. The owner's use
// of each GPU is judged by a HarvestTracker; idle GPUs are offered once their owner-idle
// window has passed. The scheduling leader decides on one; each replica quotes on its own.
// Not thread-safe: one user at a time.

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/harvest.h"
#include "scheduler/incremental.h"
#include "src/api/context.h"
#include "src/store/scheduler_feed.h"

namespace surplus::api {

class FleetMirror {
 public:
  explicit FleetMirror(const ApiContext& ctx);

  struct Refreshed {
    bool full = false;  ///< the engine was built anew from a full read
    int64_t rows = 0;   ///< rows read
    std::vector<scheduler::GpuRef> reclaimed;  ///< GPUs whose owner came back since the last call
  };
  /// Reads what changed since the previous call (everything on the first call and after
  /// Reset()) and applies it as of now_ms. On a failed read the mirror is reset.
  absl::StatusOr<Refreshed> Refresh(int64_t now_ms);
  /// Forgets everything; the next Refresh() reads the whole fleet.
  void Reset();

  bool loaded() const { return engine_ != nullptr; }
  /// The engine (requires loaded()).
  scheduler::IncrementalScheduler& engine() { return *engine_; }
  /// The market settings in force: configured ones with the stored reserve prices and quotas.
  const scheduler::MarketConfig& market() const { return market_; }

 private:
  void Absorb(store::FeedRead read, int64_t now_ms);
  /// A stored node as the engine should see it at now_ms; remembers when its idle GPUs
  /// become offerable.
  scheduler::NodeView NodeNow(const store::StoredNode& node, int64_t now_ms);
  void Clear();

  const ApiContext& ctx_;
  store::PgSchedulerFeed feed_;
  std::unique_ptr<scheduler::IncrementalScheduler> engine_;
  scheduler::HarvestTracker harvest_;
  std::map<std::string, store::StoredNode> nodes_;
  std::set<std::pair<int64_t, std::string>> offerable_at_;  // (when, node)
  scheduler::MarketConfig market_;
};

}  // namespace surplus::api
