#pragma once
// Nodes, their GPUs, telemetry, cordons and the owner's reclaims.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/scheduler.h"
#include "src/store/pg_pool.h"
#include "surplus/v1/operator.pb.h"
#include "surplus/v1/worker.pb.h"

namespace surplus::store {

struct HarvestConfig {
  /// A GPU is offered to tenants only after the owner left it idle this long.
  int64_t owner_idle_window_ms = 0;
  /// A node that has not reported for this long is lost.
  int64_t lost_after_ms = 10'000;
};

class PgNodeStore {
 public:
  explicit PgNodeStore(PgPool& pool) : pool_(pool) {}

  absl::Status Register(const surplus::v1::RegisterRequest& req, int64_t now_ms);
  absl::Status RecordTelemetry(const std::string& node, const surplus::v1::Telemetry& t, int64_t now_ms);
  /// NOT_FOUND for an unknown node.
  absl::StatusOr<surplus::v1::Node> SetCordoned(const std::string& node, bool cordoned);
  /// Marks GPUs reclaimed (or released) by the owner. Empty `gpus` = all of the node.
  absl::Status SetReclaimed(const std::string& node, const std::vector<int>& gpus, bool reclaimed,
                            int64_t now_ms);
  absl::StatusOr<std::vector<surplus::v1::Node>> ListNodes(const HarvestConfig& cfg, int64_t now_ms);
  /// Live (not lost) nodes as the scheduler sees them; tenant masks are filled by the caller.
  absl::StatusOr<std::vector<scheduler::NodeView>> SchedulerNodes(const HarvestConfig& cfg, int64_t now_ms);

 private:
  PgPool& pool_;
};

}  // namespace surplus::store
