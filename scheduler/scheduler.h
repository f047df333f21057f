#pragma once
// The scheduler and market: a cluster snapshot in, decisions out. Pure: no I/O, no
// clock reads, no logging, no randomness except what the caller passes in. The same
// snapshot always yields the same decisions.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "surplus/gpu_models.h"
#include "surplus/job_types.h"
#include "surplus/money.h"

namespace surplus::scheduler {

/// One GPU as the scheduler sees it.
struct GpuView {
  int index = 0;
  /// Memory slots taken by tenant slices already placed (running jobs), bit i = slot i.
  uint8_t tenant_mask = 0;
  /// The owner uses (or has reclaimed) this GPU: nothing may run on it; tenant jobs on it
  /// must be preempted.
  bool owner_busy = false;
  /// Owner-idle for at least the harvest window: may be offered to tenants.
  bool offerable = true;
  bool healthy = true;
  /// In MIG mode: only these existing instances (profile name, first memory slot) may be
  /// given out, and never the whole GPU; its geometry is the operator's to change.
  bool mig = false;
  std::vector<std::pair<std::string, int>> mig_slices;
};

struct NodeView {
  std::string id;
  std::string gpu_model;  ///< GpuModel::name
  std::string fabric;     ///< gangs need all nodes on one fabric label; empty = none
  /// No new work is placed here; running jobs keep running.
  bool cordoned = false;
  /// Being drained: no new work, and running jobs get a PreemptCause::kCordoned notice.
  bool draining = false;
  /// Host CPU (millicores) and memory (MiB) for jobs; 0 = unknown (limits nothing).
  int64_t cpu_millis = 0;
  int64_t memory_mib = 0;
  std::vector<GpuView> gpus;
};

/// Where a job runs on one node: either a slice of one GPU or whole GPUs.
struct NodePlacement {
  std::string node_id;
  std::vector<int> gpu_indices;  ///< one entry for a slice; N for whole GPUs
  std::string slice_profile;     ///< profile name (whole GPU profile for whole GPUs)
  int slot_start = 0;            ///< first memory slot (0 for whole GPUs)
};

struct JobView {
  std::string id;
  std::string tenant_id;
  Tier tier = Tier::kSpot;
  Micros bid = 0;                ///< micro-dollars per GPU-hour (spot); ignored for on-demand
  JobShape shape;
  std::string gpu_model;         ///< required model, empty = any
  int64_t submit_seq = 0;        ///< ties broken by submit order (lower first)
  int64_t max_runtime_ms = 0;    ///< 0 = unbounded
  bool running = false;
  int64_t started_at_ms = 0;     ///< when running
  std::vector<NodePlacement> placements;  ///< when running
  /// Running and already given a preemption notice: it still holds its placement until it
  /// stops, is not preempted again, and pays nothing new.
  bool preempting = false;
  /// When `preempting`: the notice deadline (0 = unknown, assume now + notice period).
  int64_t preempt_deadline_ms = 0;
};

struct TenantQuota {
  int max_gpus = 0;          ///< 0 = unlimited; counts whole-GPU equivalents in compute units / 7
  int max_pending_jobs = 0;  ///< 0 = unlimited
  bool operator==(const TenantQuota& o) const {
    return max_gpus == o.max_gpus && max_pending_jobs == o.max_pending_jobs;
  }
  bool operator!=(const TenantQuota& o) const { return !(*this == o); }
};

struct MarketConfig {
  /// Operator's reserve price per GPU model, micro-dollars per GPU-hour.
  std::map<std::string, Micros> reserve_price;
  /// On-demand list price per GPU model.
  std::map<std::string, Micros> list_price;
  /// A running spot job is preempted by a bid only when the clearing price exceeds its bid
  /// by at least this much ...
  Micros min_preempt_gap = 0;
  /// ... and it has run at least this long.
  int64_t min_runtime_before_preempt_ms = 0;
  std::map<std::string, TenantQuota> quotas;
  /// Preemption notice period; used to estimate when preempted jobs free capacity.
  int64_t preempt_notice_ms = 120'000;
};

struct Snapshot {
  int64_t now_ms = 0;
  std::vector<NodeView> nodes;
  std::vector<JobView> jobs;  ///< pending and running
  MarketConfig market;
};

struct Assignment {
  std::string job_id;
  std::vector<NodePlacement> placements;
  Micros price = 0;  ///< price per GPU-hour it pays now
};

enum class PreemptCause { kOutbid, kOwnerReclaim, kUnhealthy, kCordoned };

struct Preemption {
  std::string job_id;
  PreemptCause cause = PreemptCause::kOutbid;
  std::string reason;  ///< readable by the tenant
};

struct PoolPrice {
  std::string gpu_model;
  Micros clearing_price = 0;  ///< per GPU-hour, >= reserve price
  int64_t capacity_units = 0; ///< compute units offered
  int64_t used_units = 0;     ///< compute units allocated after this round
  int64_t pending_jobs = 0;   ///< jobs still pending that may run in this pool
};

/// Capacity held back for the highest-priority job that cannot be placed, so that smaller
/// jobs cannot starve it. Other jobs may use it only when they end before `start_ms`.
struct Reservation {
  std::string job_id;
  std::vector<NodePlacement> placements;  ///< whole GPUs (or the GPU of a slice) held
  int64_t start_ms = 0;                   ///< expected start; kUnknownStart if unknown
  static constexpr int64_t kUnknownStart = INT64_MAX;
};

/// A pool whose clearing price moved, reported by incremental rounds instead of one price
/// per job: every running spot job of the pool that is not under notice now pays
/// min(clearing_price, its bid) (jobs started this round carry that price already).
struct PoolRepricing {
  std::string gpu_model;
  Micros clearing_price = 0;
};

/// Why a job stays pending.
struct PendingReason {
  std::string text;  ///< readable by the tenant, e.g. "no 4g.40gb placement free"
  /// Set when the job is outbid in this GPU model's pool. `text` then quotes the pool's
  /// clearing price at this round; rounds that report only changes do not report the job
  /// again when nothing but that price moves, so whoever shows the reason later renders it
  /// with the pool's current clearing price (OutbidReason).
  std::string outbid_model;
  bool operator==(const PendingReason& o) const { return text == o.text && outbid_model == o.outbid_model; }
  bool operator!=(const PendingReason& o) const { return !(*this == o); }
};

/// "outbid: clearing price $2.10/GPU-h > your bid $1.80".
std::string OutbidReason(Micros clearing_price, Micros bid);

struct Decisions {
  std::vector<Assignment> assignments;  ///< pending jobs to start
  std::vector<Preemption> preemptions;  ///< running jobs to stop with notice
  std::vector<PoolPrice> prices;        ///< one per GPU model present
  /// Why each job that stays pending is pending, e.g. "no 4g.40gb placement free".
  std::map<std::string, PendingReason> pending_reasons;
  /// Price per GPU-hour each running job (that keeps running) pays from now on. Rounds
  /// that report only changes (IncrementalScheduler without full_report) list here only
  /// prices that do not follow from `repriced_pools`.
  std::map<std::string, Micros> running_prices;
  std::vector<PoolRepricing> repriced_pools;
  /// Capacity held for blocked jobs this round (at most one).
  std::vector<Reservation> reservations;
};

/// One full scheduling and market round.
///
/// Market rules. Capacity is every GPU that is healthy, offerable, not owner_busy, on a
/// node neither cordoned nor draining. Running jobs on owner_busy GPUs are preempted
/// (kOwnerReclaim), on unhealthy ones (kUnhealthy), on draining nodes (kCordoned). Pending
/// jobs are admitted on-demand first, then spot by bid descending, ties by submit_seq,
/// subject to tenant quotas and (spot) the pool's reserve price, and placed with
/// fragmentation-aware packing. The clearing price of a pool is the highest effective bid
/// (spot: bid; on-demand: list price) that could not be placed for lack of capacity, never
/// below the reserve price. Spot jobs pay min(clearing price, bid); on-demand pays list
/// price. A blocked job may displace running spot jobs whose bid is at least
/// min_preempt_gap below its effective bid and that ran min_runtime_before_preempt_ms;
/// on-demand jobs are never displaced by bids. The highest-priority job that stays blocked
/// gets a reservation; others backfill it only when their max_runtime ends before it.
Decisions Schedule(const Snapshot& snapshot);

}  // namespace surplus::scheduler
