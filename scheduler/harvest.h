#pragma once
// Harvesting: which GPUs the owner leaves idle long enough to sell, and which it takes back.
// Fed per-GPU observations (telemetry: owner processes seen or not) and explicit reclaim /
// release calls; the control plane copies the result into GpuView::offerable / owner_busy
// before each round. Pure: time comes in with every call.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "scheduler/scheduler.h"

namespace surplus::scheduler {

struct HarvestConfig {
  /// A GPU is offered once the owner has left it idle for this long.
  int64_t idle_window_ms = 5 * 60'000;
};

struct GpuRef {
  std::string node_id;
  int gpu_index = 0;
  bool operator<(const GpuRef& o) const {
    return std::tie(node_id, gpu_index) < std::tie(o.node_id, o.gpu_index);
  }
  bool operator==(const GpuRef& o) const {
    return node_id == o.node_id && gpu_index == o.gpu_index;
  }
};

struct GpuObservation {
  GpuRef gpu;
  bool owner_busy = false;  ///< owner processes present on the GPU
  int64_t now_ms = 0;
};

/// A GPU's owner state as kept in the store by whichever replica received its telemetry:
/// the leader syncs its tracker from it, so the idle window survives a change of leader.
struct OwnerRecord {
  bool telemetry_busy = false;  ///< owner processes seen in the latest telemetry
  bool reclaimed = false;       ///< explicitly reclaimed by the owner
  int64_t idle_since_ms = 0;    ///< when the owner was first seen idle (0 = busy)
};

struct GpuHarvestState {
  bool known = false;       ///< observed at least once
  bool owner_busy = true;   ///< telemetry says busy, or explicitly reclaimed
  bool offerable = false;   ///< owner-idle for at least the window
  int64_t idle_since_ms = 0;
};

class HarvestTracker {
 public:
  explicit HarvestTracker(HarvestConfig config = {}) : config_(config) {}
  const HarvestConfig& config() const { return config_; }

  /// Telemetry. An observation older than the GPU's latest one is ignored.
  void Observe(const GpuObservation& obs);
  /// The owner takes the GPU back explicitly: busy until Release(), whatever telemetry says.
  void Reclaim(const GpuRef& gpu, int64_t now_ms);
  void Release(const GpuRef& gpu, int64_t now_ms);
  /// Sets a GPU's state from its stored record. A GPU that turns busy is reported by
  /// TakeReclaimed(); an idle one counts as idle since the record says (or since now_ms,
  /// when the record has no time).
  void Sync(const GpuRef& gpu, const OwnerRecord& record, int64_t now_ms);
  /// Syncs every GPU of `node` from `records` (parallel to node->gpus) and sets their
  /// owner_busy / offerable as of now_ms.
  void SyncNode(const std::vector<OwnerRecord>& records, int64_t now_ms, NodeView* node);
  /// Drops all state of a node (it left the fleet).
  void ForgetNode(const std::string& node_id);

  /// State at now_ms. A GPU never observed is owner-busy and not offerable.
  GpuHarvestState State(const GpuRef& gpu, int64_t now_ms) const;
  /// GPUs that became owner-busy since the previous call, sorted: their tenant jobs must be
  /// preempted now (Schedule() does so once owner_busy is set on them).
  std::vector<GpuRef> TakeReclaimed();
  /// Sets owner_busy / offerable on every GPU of `nodes` from the tracker's state.
  void Apply(int64_t now_ms, std::vector<NodeView>* nodes) const;
  /// The earliest time after now_ms at which an idle GPU becomes offerable, if any: when
  /// the next round is worth running.
  std::optional<int64_t> NextOfferable(int64_t now_ms) const;

 private:
  struct Rec {
    bool telemetry_busy = false;
    bool reclaimed = false;
    int64_t last_obs_ms = INT64_MIN;
    int64_t idle_since_ms = 0;
    bool Busy() const { return telemetry_busy || reclaimed; }
  };
  void Transition(const GpuRef& gpu, Rec& rec, bool was_busy, int64_t now_ms);

  HarvestConfig config_;
  std::map<GpuRef, Rec> gpus_;
  std::vector<GpuRef> reclaimed_;
};

}  // namespace surplus::scheduler
