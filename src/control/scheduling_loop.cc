#include "src/control/scheduling_loop.h"

#include <spdlog/spdlog.h>

#include <set>

#include "src/api/services.h"
#include "src/store/market_store.h"

namespace surplus::control {
namespace {
constexpr int64_t kLeaderLockKey = 0x5375727033;
}  // namespace

SchedulingLoop::SchedulingLoop(api::ApiContext& ctx, std::string database_url, std::chrono::milliseconds interval)
    : ctx_(ctx), url_(std::move(database_url)), interval_(interval) {}

SchedulingLoop::~SchedulingLoop() { Stop(); }

void SchedulingLoop::Start() { thread_ = std::thread([this] { Loop(); }); }

void SchedulingLoop::Stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

bool SchedulingLoop::EnsureLeader() {
  try {
    if (lock_conn_ && lock_conn_->is_open()) {
      // Still ours while the session lives; a cheap query notices a dead connection.
      pqxx::nontransaction tx(*lock_conn_);
      tx.exec("SELECT 1");
      return true;
    }
    lock_conn_ = std::make_unique<pqxx::connection>(url_);
    pqxx::nontransaction tx(*lock_conn_);
    const bool got = tx.exec_params("SELECT pg_try_advisory_lock($1)", kLeaderLockKey)[0][0].as<bool>();
    if (!got) {
      lock_conn_.reset();
      return false;
    }
    spdlog::info("this replica is now the scheduling leader");
    return true;
  } catch (const std::exception& e) {
    if (stats_.leader) spdlog::warn("lost scheduling leadership: {}", e.what());
    lock_conn_.reset();
    return false;
  }
}

void SchedulingLoop::Loop() {
  auto next = std::chrono::steady_clock::now();
  while (!stopping_) {
    next += interval_;
    const bool leader = EnsureLeader();
    stats_.leader = leader;
    if (leader) {
      absl::Status s = RunRound();
      if (!s.ok()) spdlog::warn("scheduling round failed: {}", s.ToString());
    }
    const auto now = std::chrono::steady_clock::now();
    if (next < now) next = now;
    while (!stopping_ && std::chrono::steady_clock::now() < next) {
      std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(
          std::chrono::milliseconds(50),
          std::chrono::duration_cast<std::chrono::milliseconds>(next - std::chrono::steady_clock::now()) +
              std::chrono::milliseconds(1)));
    }
  }
}

absl::Status SchedulingLoop::RunRound() {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t now = NowMs();
  auto lost = ctx_.jobs->MarkLostNodes(ctx_.config.harvest.lost_after_ms, now);
  if (!lost.ok()) return lost.status();
  for (const auto& n : *lost) spdlog::warn("node {} lost: no report for {} ms", n, ctx_.config.harvest.lost_after_ms);

  auto snap = api::LoadSnapshot(ctx_, now);
  if (!snap.ok()) return snap.status();
  scheduler::Decisions d = scheduler::Schedule(*snap);

  std::map<std::string, std::string> node_model;
  for (const auto& n : snap->nodes) node_model[n.id] = n.gpu_model;
  std::map<std::string, std::string> job_models;
  std::set<std::string> touched;
  for (const auto& a : d.assignments) {
    if (!a.placements.empty()) job_models[a.job_id] = node_model[a.placements[0].node_id];
    for (const auto& p : a.placements) touched.insert(p.node_id);
  }
  std::map<std::string, const scheduler::JobView*> jobs;
  for (const auto& j : snap->jobs) jobs[j.id] = &j;
  for (const auto& p : d.preemptions) {
    auto it = jobs.find(p.job_id);
    if (it == jobs.end()) continue;
    for (const auto& pl : it->second->placements) touched.insert(pl.node_id);
  }
  if (absl::Status s = ctx_.jobs->ApplyDecisions(d, job_models, now, ctx_.config.preemption_notice_ms); !s.ok()) {
    return s;
  }
  std::vector<store::RoundPrice> prices;
  for (const auto& p : d.prices) {
    store::RoundPrice rp;
    rp.gpu_model = p.gpu_model;
    rp.clearing = p.clearing_price;
    auto r = snap->market.reserve_price.find(p.gpu_model);
    rp.reserve = r == snap->market.reserve_price.end() ? 0 : r->second;
    rp.capacity_units = p.capacity_units;
    rp.used_units = p.used_units;
    rp.at_ms = now;
    for (const auto& j : snap->jobs) {
      if (!j.running && (j.gpu_model.empty() || j.gpu_model == p.gpu_model)) ++rp.pending_jobs;
    }
    prices.push_back(rp);
  }
  if (absl::Status s = ctx_.market->RecordRound(prices); !s.ok()) return s;
  for (const auto& n : touched) ctx_.workers->Nudge(n);
  if (!d.assignments.empty() || !d.preemptions.empty()) {
    spdlog::info("round: {} started, {} preempted, {} pending", d.assignments.size(), d.preemptions.size(),
                 d.pending_reasons.size());
  }
  stats_.rounds++;
  stats_.assignments += static_cast<int64_t>(d.assignments.size());
  stats_.preemptions += static_cast<int64_t>(d.preemptions.size());
  stats_.last_round_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  return absl::OkStatus();
}

}  // namespace surplus::control
