#pragma once
// Nodes, their GPUs, telemetry, cordons and the owner's reclaims.

#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/harvest.h"
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

/// A node as stored: the scheduler's view, and its GPUs' owner records (parallel to
/// view.gpus).
struct StoredNode {
  scheduler::NodeView view;
  std::vector<scheduler::OwnerRecord> owner;
};

/// One telemetry report of a node, as received.
struct TelemetryReport {
  std::string node;
  surplus::v1::Telemetry telemetry;
  int64_t at_ms = 0;
  bool whole = true;  ///< every GPU of the node is in it (TelemetryWriteFilter may drop some)
};

/// When a GPU's telemetry is written: its health and owner state as soon as they change;
/// its utilization and memory figures (shown on dashboards only) when they moved by a step
/// or are max_age_ms old.
struct TelemetryWriteRule {
  static constexpr int kFigureStepPct = 10;
  static constexpr int64_t kFigureStepMib = 4096;
  static constexpr int64_t kFigureMaxAgeMs = 10'000;
};

/// One worker stream's memory of what it last wrote for its node, so that reports which
/// would change nothing stay out of the database: at fleet scale most reports then write
/// neither GPU rows nor a heartbeat. PgNodeStore applies the same rule to what it is given.
class TelemetryWriteFilter {
 public:
  /// The node's heartbeat is written by the first report at least `heartbeat_every_ms` after
  /// the last one written (its age can reach that plus one report interval). A report is
  /// written whole, every GPU's state included (rows that did not change are not rewritten),
  /// at least every `whole_every_ms`: state that a database crash lost from an unflushed
  /// commit comes back, and figures the store declined to write (the filter remembers them
  /// as sent) are settled.
  TelemetryWriteFilter(int64_t heartbeat_every_ms, int64_t whole_every_ms)
      : heartbeat_every_ms_(heartbeat_every_ms), whole_every_ms_(whole_every_ms) {}
  /// What of `report` needs writing (only GPUs that are due), or nothing. The caller
  /// writes it, then calls Written() (or Reset() if the write failed).
  std::optional<TelemetryReport> Due(const TelemetryReport& report) const;
  void Written(const TelemetryReport& written);
  /// Forgets what was written: the next report is written whole.
  void Reset();

 private:
  struct Gpu {
    bool healthy = false;
    std::string reason;
    bool busy = false;
    int util = 0;
    int64_t mem = 0;
    int64_t at_ms = 0;
  };
  bool GpuDue(const Gpu* last, const surplus::v1::GpuSample& g, int64_t at_ms) const;

  const int64_t heartbeat_every_ms_;
  const int64_t whole_every_ms_;
  int64_t heartbeat_ms_ = -1;  // -1: nothing written yet
  int64_t whole_ms_ = -1;
  std::map<int, Gpu> gpus_;
};

class PgNodeStore {
 public:
  explicit PgNodeStore(PgPool& pool) : pool_(pool) {}

  absl::Status Register(const surplus::v1::RegisterRequest& req, int64_t now_ms);
  absl::Status RecordTelemetry(const std::string& node, const surplus::v1::Telemetry& t, int64_t now_ms);
  /// Records reports of many nodes in one transaction (a node may appear more than once;
  /// its reports apply in order). Telemetry is soft state that every node sends again each
  /// interval, so the commit does not wait for its WAL flush: a crash loses at most the
  /// last fraction of a second of it, never anything else. GPU rows follow
  /// TelemetryWriteRule.
  absl::Status RecordTelemetryBatch(const std::vector<TelemetryReport>& reports);
  /// NOT_FOUND for an unknown node. `drain` also cordons, and running jobs get a notice.
  absl::StatusOr<surplus::v1::Node> SetCordoned(const std::string& node, bool cordoned, bool drain);
  /// Marks GPUs reclaimed (or released) by the owner. Empty `gpus` = all of the node.
  absl::Status SetReclaimed(const std::string& node, const std::vector<int>& gpus, bool reclaimed,
                            int64_t now_ms);
  absl::StatusOr<std::vector<surplus::v1::Node>> ListNodes(const HarvestConfig& cfg, int64_t now_ms);
  /// Nodes as the scheduler reads them, in `tx`: those changed since `since_xid` (a
  /// transaction id watermark; empty = all). Lost nodes are not returned but appended to
  /// `gone` (when not null). Owner state comes as records for a HarvestTracker to judge;
  /// GpuView::owner_busy/offerable are left for it to set.
  static std::vector<StoredNode> ReadSchedulerNodes(pqxx::transaction_base& tx, const std::string& since_xid,
                                                    std::vector<std::string>* gone);

 private:
  PgPool& pool_;
};

}  // namespace surplus::store
