#pragma once
// IncrementalScheduler: the scheduling and market engine behind Schedule(). It keeps the
// fleet's free capacity indexed by shape (CapacityIndex), the pending queue in admission
// order and the running spot jobs in bid order between rounds, and is updated with deltas,
// so a round costs time in proportion to what changed plus one pass over the queue.
//
// Contract with the caller (the control plane):
//   - Round() assumes its decisions are applied: assigned jobs are running on the returned
//     placements from now_ms, preempted jobs are `preempting` (holding their placement)
//     until a delta removes them. A delta that says otherwise (an assignment that failed to
//     start: upsert it as pending again) wins.
//   - When a delta removes a job whose slots a node's GpuView::tenant_mask also covers,
//     upsert that node too (the scheduler ORs tenant_mask with its own job slots).
// Same state and the same deltas always give the same decisions.

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "scheduler/capacity_index.h"
#include "scheduler/scheduler.h"

namespace surplus::scheduler {

struct SnapshotDelta {
  std::vector<NodeView> upsert_nodes;    ///< new nodes, or a node's new state (whole view)
  std::vector<std::string> remove_nodes;
  std::vector<JobView> upsert_jobs;      ///< new jobs, or a job's new state (whole view)
  std::vector<std::string> remove_jobs;  ///< finished, cancelled, or stopped
  std::optional<MarketConfig> market;    ///< new market configuration
};

struct RoundOptions {
  /// true: report every pending reason and every running price (as Schedule() does);
  /// false: report only those that changed since the previous round.
  bool full_report = false;
};

class IncrementalScheduler {
 public:
  explicit IncrementalScheduler(PackPolicy policy = PackPolicy::kFragmentationAware);
  explicit IncrementalScheduler(const Snapshot& snapshot,
                                PackPolicy policy = PackPolicy::kFragmentationAware);

  void ApplyDelta(const SnapshotDelta& delta);
  /// One scheduling and market round at `now_ms`; see Schedule() for the rules.
  Decisions Round(int64_t now_ms, const RoundOptions& options = {});
  /// What Round(now_ms) would decide with `candidate` (if given) added to the queue as the
  /// last job submitted, without keeping any of it: afterwards the engine is as it was, and
  /// the next Round() decides as if this had not run. Reports the candidate's pending
  /// reason, if it stays pending, and no running prices. A candidate whose id is a known
  /// job's is left out (the round runs without it).
  Decisions DryRound(int64_t now_ms, const std::optional<JobView>& candidate = std::nullopt);

  /// The GPU model of a known node ("" when unknown).
  std::string NodeModel(const std::string& node_id) const;

  size_t pending_jobs() const { return pending_.size(); }
  /// Nodes a known job runs on (empty when pending or unknown).
  std::vector<std::string> JobNodes(const std::string& job_id) const;
  size_t running_jobs() const { return running_count_; }
  const CapacityIndex& capacity() const { return index_; }

 private:
  enum class Evict : uint8_t { kNone, kOwner, kUnhealthy, kDrain };
  enum class ShapeKind : uint8_t { kSlice, kWhole, kGang };

  /// Why a job is pending, as data; formatted only when reported.
  enum class Why : uint8_t {
    kNone,
    kInvalidShape,
    kNoModel,
    kNoProfile,
    kTooManyGpus,
    kNoFabric,
    kNoListPrice,
    kBelowReserve,
    kOverGpuQuota,
    kOverPendingQuota,
    kNoPlacement,
    kOutbid,
    kWaitingVacate,
    kWaitingReservation,
    kHostTooLarge,
  };
  struct ReasonKey {
    Why why = Why::kNone;
    int pool = -1;
    int64_t a = 0;
    int64_t b = 0;
    bool operator==(const ReasonKey& o) const {
      return why == o.why && pool == o.pool && a == o.a && b == o.b;
    }
  };
  /// Whether a job whose reported reason was `last` needs reporting again for `now`. An
  /// outbid job does not when only the clearing price it quotes moved (see
  /// PendingReason::outbid_model).
  static bool SameReport(const ReasonKey& last, const ReasonKey& now) {
    if (now.why == Why::kOutbid) return last.why == now.why && last.pool == now.pool && last.b == now.b;
    return last == now;
  }

  struct Slot {
    int gpu = 0;
    uint8_t mask = 0;
  };
  /// A pool the job may run in, with its shape resolved against the pool's model.
  struct Eligible {
    int pool = 0;
    int profile = -1;  ///< kSlice: profile index in the pool's model
  };

  struct Job {
    JobView view;
    bool live = false;
    int tenant = -1;
    ShapeKind kind = ShapeKind::kWhole;
    int gpus_per_node = 1;
    int nodes = 1;
    int64_t units = 0;  ///< compute units in all (quota, usage)
    HostDemand host;    ///< CPU and memory on each node (0 fields: proportional share)
    // Running.
    std::vector<Slot> slots;
    std::vector<std::pair<int, HostDemand>> host_charged;  ///< index node, charge held there
    std::vector<int> on_nodes;  ///< NodeRec ids it has slots on
    int run_pool = -1;
    int64_t young_ticket = 0;  ///< its live young_spot entry (0: none)
    // Pending: pools it may run in, refreshed when the fleet's structure changes.
    int64_t eligible_version = -1;
    std::vector<Eligible> eligible;
    ReasonKey infeasible;
    // Round scratch.
    int64_t claimed_round = -1;
    int64_t evictable_stamp = -1;
    int run_profile = -1;  ///< kSlice running: profile index in run_pool's model
    int64_t over_pending_round = -1;
    int64_t started_round = -1;
    // What was last reported.
    bool reported_reason = false;
    ReasonKey last_reason;
    Micros last_price = -1;
  };

  struct NodeRec {
    NodeView view;  // gpus omitted after load; per-GPU state lives in GpuRec
    bool live = false;
    int index_node = -1;
    int pool = -1;
    std::set<int> jobs;
  };
  struct GpuRec {
    int node = -1;  // NodeRec id
    int view_index = 0;
    uint8_t view_mask = 0;
    bool owner_busy = false;
    bool offerable = true;
    bool healthy = true;
    Evict evict = Evict::kNone;
    std::vector<std::pair<int, uint8_t>> occupants;  // job id, slots
    std::vector<int64_t> occupant_end;  // parallel: RawEnd() of each occupant
    // Summary of the occupants for the reservation search (SummarizeOccupants): the slots
    // they cover, the latest RawEnd() >= 0 among them, and whether one has RawEnd() -1.
    uint8_t covered = 0;
    bool ends_after_notice = false;
    int64_t latest_end = INT64_MIN;
  };

  struct Tenant {
    std::string name;
    TenantQuota quota;
    int64_t used_units = 0;                      // running and preempting jobs
    absl::btree_set<std::pair<int64_t, int>> pending;  // (submit_seq, job)
  };

  // Admission order: on-demand first, then bid descending, then submit_seq, then id order.
  struct PendingKey {
    int tier = 0;
    Micros neg_bid = 0;
    int64_t seq = 0;
    int job = 0;
    bool operator<(const PendingKey& o) const {
      return std::tie(tier, neg_bid, seq, job) < std::tie(o.tier, o.neg_bid, o.seq, o.job);
    }
  };
  // Victim order: lowest bid first, then the most recently started (loses least work).
  using RunKey = std::tuple<Micros, int64_t, int>;

  struct PoolRec {
    std::string model;
    // Running spot jobs that have run long enough to be outbid (started at or before
    // seasoned_cutoff_), and those that have not: a min-heap by start time of (start,
    // ticket, job), where an entry whose ticket is not the job's young_ticket is stale
    // (the job stopped or moved) and is dropped when it comes up. No allocation per job.
    std::set<RunKey> running_spot;
    std::vector<std::tuple<int64_t, int64_t, int>> young_spot;
    size_t young_live = 0;  // entries of young_spot that are not stale
    std::set<int> vacating;  // preempting jobs
    int64_t used_units = 0;
    // Jobs per shape in this pool (pending ones count in every pool they may run in).
    std::vector<int64_t> slice_count;
    std::vector<int64_t> whole_count;
    // Host CPU and memory asked by the jobs counted above that ask for them, and the
    // compute units per node those jobs take (the workload's host rate per unit).
    int64_t host_cpu = 0, host_cpu_units = 0, host_memory = 0, host_memory_units = 0;
    ShapeWeights last_weights;
    // The largest node's host size (kNever: some node's size is unknown), as of the
    // structure and host versions in host_sizes_at.
    int64_t largest_cpu = 0, largest_memory = 0;
    std::pair<int64_t, int64_t> host_sizes_at{-1, -1};
  };

  struct ReservationState {
    int job = -1;
    int pool = -1;
    int64_t start_ms = Reservation::kUnknownStart;
    std::vector<int> gpus;
  };

  // Loading.
  /// A pending job's place in pending_.
  PendingKey QueueKey(int job) const;
  int NodeId(const std::string& id) const;
  int PoolFor(const std::string& model_name);
  int TenantId(const std::string& name);
  void UpsertNode(const NodeView& view);
  /// A MIG GPU's instances as (profile, start) of `pool`'s model: valid, non-overlapping
  /// slice placements only, sorted.
  std::vector<std::pair<int, int>> ResolveMigSlices(int pool, const GpuView& gpu) const;
  void RemoveNode(const std::string& id);
  void UpsertJob(const JobView& view);
  void RemoveJob(const std::string& id);
  void SetMarket(const MarketConfig& market);
  void RefreshGpu(int gpu);
  void Occupy(int job, const std::vector<Slot>& slots);
  /// Compute units the job takes on each node it runs on.
  int UnitsPerNode(const Job& job) const {
    return job.kind == ShapeKind::kSlice ? static_cast<int>(job.units) : job.gpus_per_node * kComputeUnitsPerGpu;
  }
  /// Whether the slots' nodes have the job's CPU and memory once the jobs leave that
  /// occupy those slots (`leaving(o)` says which may).
  template <typename Leaving>
  bool HostFitsAfter(const Job& job, const std::vector<Slot>& slots, Leaving leaving) const;
  /// Adds what `job` holds of the node's host to `sum`.
  void AddChargeOn(int job, int index_node, HostDemand* sum) const;
  void Vacate(int job);
  std::vector<Slot> ResolvePlacements(const JobView& view) const;
  void RefreshEligibility(Job& job);
  void AddRunningIndexes(int job);
  void RemoveRunningIndexes(int job);
  /// Moves running spot jobs between young_spot and running_spot so that running_spot
  /// holds exactly those started at or before `cutoff`.
  void SeasonSpot(int64_t cutoff);
  /// Files a running spot job not yet old enough to be outbid in its pool's young_spot.
  void AddYoung(PoolRec& pool, int job, int64_t started_at_ms);

  // Round helpers.
  Micros ReservePrice(int pool) const;
  const Micros* ListPrice(int pool) const;
  bool TryPlace(int job, const Eligible& e, std::vector<Slot>* out) const;
  bool TryBackfill(int job, const Eligible& e, const ReservationState& res,
                   std::vector<Slot>* out) const;
  /// Running spot jobs `job` may outbid (long enough running: running_spot) whose slots
  /// make room for it, the cheapest set.
  bool FindVictims(int job, const Eligible& e, Micros effective_bid,
                   std::vector<int>* victims, std::vector<int>* vacating,
                   std::vector<Slot>* hold);
  std::optional<ReservationState> MakeReservation(int job, int64_t now_ms);
  int64_t EndTime(int job, int64_t now_ms) const;
  /// End time of a running job independent of now: -1 = now + notice, kUnknownStart = never.
  int64_t RawEnd(int job) const;
  void RefreshOccupantEnds(int job);
  static void SummarizeOccupants(GpuRec& g);
  /// When all of GPU g is free, as far as is known now (kNever: not foreseeable).
  int64_t WholeGpuReady(int g, int64_t now_ms) const;
  void Preempt(int job, PreemptCause cause, std::string reason, int64_t now_ms, Decisions* out);
  std::vector<NodePlacement> ToPlacements(const Job& job, const std::vector<Slot>& slots) const;
  std::string FormatReason(const Job& job, const ReasonKey& key,
                           const std::vector<Micros>& clearing) const;
  std::string ShapeText(const Job& job, int pool) const;
  void SetWeights();
  /// Adds (sign 1) or removes (-1) a job's shape from the per-pool counts.
  void CountShape(Job& job, int sign);
  bool GangFeasible(int pool, int nodes, int gpus_per_node);
  /// What makes two pending jobs place alike: pool, shape and host demand.
  using ShapeKeyT = std::tuple<int, int, int, int, int64_t, int64_t>;
  ShapeKeyT ShapeKey(const Job& job, const Eligible& e) const;
  /// Shapes that failed in a round, by (pool, kind, size) and the host demand and bid they
  /// failed with. Within a round capacity only shrinks, so what failed stays failed.
  struct FailedShapes {
    struct Entry {
      HostDemand host;
      Micros bid = 0;
    };
    absl::flat_hash_map<std::tuple<int, int, int, int>, std::vector<Entry>> failed;
    /// A job of `key` asking at least `host` and bidding at most `bid` would fail too.
    bool Covers(const ShapeKeyT& key, const HostDemand& host, Micros bid) const;
    void Add(const ShapeKeyT& key, const HostDemand& host, Micros bid);
  };
  /// Whether the node is large enough for the job's CPU and memory at all.
  bool HostCanEverFit(const Job& job, int index_node) const;
  /// Whether the job asks for more CPU or memory than any node of the pool has at all.
  bool HostTooLarge(const Job& job, int pool);
  /// When the node will have the job's CPU and memory free, as far as the ends of its
  /// jobs are known (kNever: not foreseeable, or the node is too small).
  int64_t HostReadyAt(const Job& job, int index_node, int64_t now_ms) const;
  Micros EffectiveBid(const Job& job, int pool) const;

  /// What a dry round changed, to put back in reverse order: a job it started (`view` as it
  /// was while pending) or a job it gave notice to.
  struct Undo {
    int job = -1;
    bool started = false;
    JobView view;
    int run_pool = -1;
    int run_profile = -1;
    bool reported_reason = false;
    int64_t started_round = -1;
    int64_t preempt_deadline_ms = 0;
  };
  void UndoDryRound(const std::vector<Undo>& log);

  CapacityIndex index_;
  MarketConfig market_;
  std::vector<Undo>* undo_ = nullptr;  // set while a dry round runs
  mutable std::vector<std::pair<int64_t, int>> host_ends_scratch_;  // HostReadyAt
  int dry_candidate_ = -1;             // the dry round's candidate job, if any
  int64_t max_submit_seq_ = 0;         // highest submit_seq loaded
  int64_t round_ = 0;
  int64_t structure_version_ = 0;
  int64_t host_version_ = 0;  // bumped when a node's host size changes

  std::vector<Job> jobs_;
  std::vector<int> free_jobs_;
  absl::flat_hash_map<std::string, int> job_ids_;
  absl::btree_set<PendingKey> pending_;
  std::map<std::string, int64_t> pending_by_model_;  // pending jobs per required model ("" = any)
  size_t running_count_ = 0;

  std::vector<NodeRec> nodes_;
  absl::flat_hash_map<std::string, int> node_ids_;
  std::vector<GpuRec> gpus_;  // parallel to CapacityIndex GPU ids
  std::set<int> evict_gpus_;  // GPUs whose occupants must be preempted

  std::vector<PoolRec> pools_;
  std::vector<std::vector<int>> pool_nodes_;  // live NodeRec ids per pool
  std::map<std::tuple<int, int, int>, bool> gang_feasible_;  // (pool, K, N), this structure
  int64_t search_stamp_ = 0;
  int64_t seasoned_cutoff_ = std::numeric_limits<int64_t>::min();  // see PoolRec::running_spot
  int64_t young_tickets_ = 0;
  bool counts_valid_ = false;
  bool market_changed_ = true;
  std::vector<Micros> last_clearing_;
  // Running jobs loaded by deltas since the last (not dry) round; a set, so that an engine
  // that only runs dry rounds (a quote mirror) does not grow it without bound.
  absl::flat_hash_set<int> price_dirty_;
  // Loading a whole snapshot: the queue is built in one sorted pass at the end.
  bool bulk_ = false;
  int64_t now_ms_ = 0;
  std::map<std::string, int> pool_ids_;
  std::map<std::string, int> fabric_ids_;
  std::vector<Tenant> tenants_;
  absl::flat_hash_map<std::string, int> tenant_ids_;
};

}  // namespace surplus::scheduler
