#pragma once
// The leader's loop. The leader keeps a FleetMirror (an IncrementalScheduler kept up to
// date from the change feed) between rounds: on taking over it reads everything once, then
// each round reads only the rows that changed since its previous read, runs a round,
// persists the decisions in one transaction and nudges the workers concerned. Any failure
// to read or persist drops the kept state; the next round starts from a full read.
// Leadership is a PostgreSQL session advisory lock held on a dedicated connection: if that
// connection drops, another replica takes over.

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include <pqxx/pqxx>

#include "src/api/context.h"
#include "src/api/fleet_mirror.h"

namespace surplus::control {

struct LoopStats {
  std::atomic<int64_t> rounds{0};
  std::atomic<int64_t> last_round_ms{0};
  std::atomic<int64_t> assignments{0};
  std::atomic<int64_t> preemptions{0};
  std::atomic<bool> leader{false};
  std::atomic<int64_t> full_reads{0};       ///< rounds that rebuilt the state from a full read
  std::atomic<int64_t> last_changed_rows{0};  ///< rows read by the last round
  std::atomic<int64_t> last_read_ms{0};       ///< lost nodes, change feed
  std::atomic<int64_t> last_schedule_ms{0};   ///< deltas applied, round run
  std::atomic<int64_t> last_persist_ms{0};    ///< decisions and prices written
};

class SchedulingLoop {
 public:
  SchedulingLoop(api::ApiContext& ctx, std::string database_url, std::chrono::milliseconds interval);
  ~SchedulingLoop();
  void Start();
  void Stop();
  const LoopStats& stats() const { return stats_; }

  /// One round (exposed for tests). Requires leadership.
  absl::Status RunRound();

 private:
  void Loop();
  bool EnsureLeader();
  /// Forgets the kept state; the next round starts from a full read.
  void DropState();

  api::ApiContext& ctx_;
  const std::string url_;
  const std::chrono::milliseconds interval_;
  std::unique_ptr<pqxx::connection> lock_conn_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  LoopStats stats_;

  // Kept between rounds while this replica leads (touched only by the loop's thread).
  api::FleetMirror mirror_;
  bool full_report_ = true;
  // The prices last written to market_rounds, per model: a round writes a pool's row only
  // when its figures changed or the last row is a minute old.
  std::map<std::string, store::RoundPrice> recorded_;
  int64_t pruned_at_ms_ = 0;  // when old price rows were last deleted
};

}  // namespace surplus::control
