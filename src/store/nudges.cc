#include "src/store/nudges.h"

#include <chrono>

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "absl/strings/str_split.h"

namespace surplus::store {
namespace {

// NOTIFY payloads must stay under 8,000 bytes.
constexpr size_t kMaxPayload = 7'000;

// A payload is "sender|node,node,...".
class Receiver : public pqxx::notification_receiver {
 public:
  Receiver(pqxx::connection_base& conn, const std::string& self,
           const std::function<void(const std::vector<std::string>&)>& on_nodes)
      : pqxx::notification_receiver(conn, kNudgeChannel), self_(self), on_nodes_(on_nodes) {}
  void operator()(const std::string& payload, int /*backend_pid*/) override {
    const size_t bar = payload.find('|');
    if (bar == std::string::npos || payload.compare(0, bar, self_) == 0) return;
    const std::vector<std::string> nodes = absl::StrSplit(payload.substr(bar + 1), ',', absl::SkipEmpty());
    on_nodes_(nodes);
  }

 private:
  const std::string& self_;
  const std::function<void(const std::vector<std::string>&)>& on_nodes_;
};

}  // namespace

absl::Status PublishNudges(PgPool& pool, const std::string& sender, const std::vector<std::string>& nodes) {
  if (nodes.empty()) return absl::OkStatus();
  const std::string head = sender + "|";
  std::vector<std::string> payloads;
  std::string cur = head;
  for (const auto& n : nodes) {
    if (cur.size() > head.size() && cur.size() + 1 + n.size() > kMaxPayload) {
      payloads.push_back(std::move(cur));
      cur = head;
    }
    if (cur.size() > head.size()) cur += ',';
    cur += n;
  }
  payloads.push_back(std::move(cur));
  return pool.Transact([&](pqxx::work& tx) {
    for (const auto& p : payloads) tx.exec_params("SELECT pg_notify($1, $2)", kNudgeChannel, p);
  });
}

NudgeListener::NudgeListener(std::string url, std::string self,
                             std::function<void(const std::vector<std::string>&)> on_nodes,
                             std::function<void()> on_connected)
    : url_(std::move(url)),
      self_(std::move(self)),
      on_nodes_(std::move(on_nodes)),
      on_connected_(std::move(on_connected)) {
  thread_ = std::thread([this] { Loop(); });
}

NudgeListener::~NudgeListener() {
  stopping_ = true;
  thread_.join();
}

void NudgeListener::Loop() {
  auto backoff = std::chrono::milliseconds(100);
  while (!stopping_) {
    try {
      pqxx::connection conn(url_);
      Receiver receiver(conn, self_, on_nodes_);
      conn.get_notifs();  // LISTEN is issued by the receiver; make sure it is in effect
      backoff = std::chrono::milliseconds(100);
      on_connected_();
      // Wake at least every 200 ms to notice a stop.
      while (!stopping_) conn.await_notification(0, 200'000);
    } catch (const std::exception& e) {
      if (stopping_) break;
      spdlog::warn("nudge listener: {}; reconnecting in {} ms", e.what(), backoff.count());
      for (auto waited = std::chrono::milliseconds(0); waited < backoff && !stopping_;
           waited += std::chrono::milliseconds(50)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5'000));
    }
  }
}

}  // namespace surplus::store
