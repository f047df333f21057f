#pragma once
// Quotes: what a job would pay and whether it would start, before it is submitted.

#include <optional>
#include <string>
#include <vector>

#include "scheduler/scheduler.h"

namespace surplus::scheduler {

struct Quote {
  /// Clearing prices per pool this job can run in, with the candidate in the market.
  std::vector<PoolPrice> prices;
  /// It would be placed in the next round as the fleet is now.
  bool would_start_now = false;
  /// Price per GPU-hour it would pay if started now (spot: <= its bid).
  Micros price = 0;
  /// The GPU model it would run on, when it would start.
  std::string gpu_model;
  /// Why it would stay pending, when it would not start (same wording as pending reasons).
  std::string reason;
  /// Running jobs it would displace (they get a notice; it starts after they leave).
  int would_preempt = 0;
};

/// Outbid preemptions a round on `snapshot` makes with no candidate: QuoteJob reports only
/// those the candidate adds. Callers quoting many jobs on one snapshot compute it once.
int BaselineOutbid(const Snapshot& snapshot);

/// Runs one round on `snapshot` with `candidate` added as a pending job (submitted last)
/// and reports its outcome. Pure; the snapshot is not changed. An empty candidate id is
/// replaced by a private placeholder. `baseline_outbid`: BaselineOutbid(snapshot), computed
/// here when not given.
Quote QuoteJob(const Snapshot& snapshot, const JobView& candidate, std::optional<int> baseline_outbid = {});

}  // namespace surplus::scheduler
