#pragma once
// The leader's loop: each round, a snapshot in, the scheduler's decisions persisted in one
// transaction, then workers nudged. Leadership is a PostgreSQL session advisory lock held
// on a dedicated connection: if that connection drops, another replica takes over.

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include <pqxx/pqxx>

#include "src/api/context.h"

namespace surplus::control {

struct LoopStats {
  std::atomic<int64_t> rounds{0};
  std::atomic<int64_t> last_round_ms{0};
  std::atomic<int64_t> assignments{0};
  std::atomic<int64_t> preemptions{0};
  std::atomic<bool> leader{false};
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

  api::ApiContext& ctx_;
  const std::string url_;
  const std::chrono::milliseconds interval_;
  std::unique_ptr<pqxx::connection> lock_conn_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  LoopStats stats_;
};

}  // namespace surplus::control
