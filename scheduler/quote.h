#pragma once
// Quotes: what a job would pay and whether it would start, before it is submitted.

#include <optional>
#include <string>
#include <vector>

#include "scheduler/incremental.h"
#include "scheduler/scheduler.h"

namespace surplus::scheduler {

struct Quote {
  /// Clearing prices per pool this job can run in, with the candidate in the market.
  std::vector<PoolPrice> prices;
  /// The same pools' clearing prices as the market is now, without the candidate.
  std::vector<PoolPrice> current_prices;
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

/// The next round at `now_ms` with no candidate: its outbid preemptions (QuoteJob reports
/// only those the candidate adds) and its clearing prices (the market as it is now).
/// Callers quoting many jobs on one state compute it once. Leaves the engine as it was
/// (a dry round).
struct QuoteBaseline {
  int outbid = 0;
  std::vector<PoolPrice> prices;
};
QuoteBaseline BaselineOf(IncrementalScheduler& engine, int64_t now_ms);

/// What the next round at `now_ms` would do with `candidate` submitted now (after every
/// known job), as a dry round: the engine is left as it was. The candidate's id is not
/// used. `baseline`: BaselineOf(engine, now_ms), computed here when not given.
Quote QuoteJob(IncrementalScheduler& engine, int64_t now_ms, const JobView& candidate,
               const std::optional<QuoteBaseline>& baseline = {});

/// The same, on a snapshot (an engine built from it for the purpose).
Quote QuoteJob(const Snapshot& snapshot, const JobView& candidate);

}  // namespace surplus::scheduler
