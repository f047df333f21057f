#pragma once
// Nudges between control-plane replicas. A worker streams to one replica, but the
// scheduling leader (or the replica that took a cancel or a drain) may be another: it
// publishes the nodes whose desired jobs changed with PostgreSQL NOTIFY, and every replica
// listens and reconciles the workers connected to it at once.

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "src/store/pg_pool.h"

namespace surplus::store {

/// The NOTIFY channel.
inline constexpr char kNudgeChannel[] = "surplus_nudge";

/// Publishes node names on kNudgeChannel on behalf of replica `sender` (several
/// notifications when they do not fit in one payload).
absl::Status PublishNudges(PgPool& pool, const std::string& sender, const std::vector<std::string>& nodes);

/// Listens on kNudgeChannel on a connection of its own, on a thread of its own, and calls
/// `on_nodes` with the node names of each notification not sent by replica `self` (which
/// nudged its own workers already). After (re)connecting it calls `on_connected`:
/// notifications sent while it was not listening are lost, so the caller reconciles
/// everything then.
class NudgeListener {
 public:
  NudgeListener(std::string url, std::string self, std::function<void(const std::vector<std::string>&)> on_nodes,
                std::function<void()> on_connected);
  ~NudgeListener();
  NudgeListener(const NudgeListener&) = delete;
  NudgeListener& operator=(const NudgeListener&) = delete;

 private:
  void Loop();
  const std::string url_;
  const std::string self_;
  const std::function<void(const std::vector<std::string>&)> on_nodes_;
  const std::function<void()> on_connected_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace surplus::store
