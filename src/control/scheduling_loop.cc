#include "src/control/scheduling_loop.h"

#include <spdlog/spdlog.h>

#include <set>
#include <tuple>

#include "src/api/services.h"
#include "src/store/market_store.h"

namespace surplus::control {
namespace {
constexpr int64_t kLeaderLockKey = 0x5375727033;
// A pool whose figures do not change still gets a market_rounds row this often, so the
// latest row says how recent the figures are.
constexpr int64_t kPriceRowEveryMs = 60'000;
// How often the leader deletes price rows past the history it keeps.
constexpr int64_t kPruneEveryMs = 3'600'000;

}  // namespace

SchedulingLoop::SchedulingLoop(api::ApiContext& ctx, std::string database_url, std::chrono::milliseconds interval)
    : ctx_(ctx),
      url_(std::move(database_url)),
      interval_(interval),
      mirror_(ctx) {}

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
    } else if (mirror_.loaded()) {
      DropState();  // another replica leads now; our copy would go stale
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

void SchedulingLoop::DropState() {
  mirror_.Reset();
  recorded_.clear();
}

absl::Status SchedulingLoop::RunRound() {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t now = NowMs();
  auto lost = ctx_.jobs->MarkLostNodes(ctx_.config.harvest.lost_after_ms, now);
  if (!lost.ok()) return lost.status();
  for (const auto& n : *lost) spdlog::warn("node {} lost: no report for {} ms", n, ctx_.config.harvest.lost_after_ms);

  auto refreshed = mirror_.Refresh(now);
  if (!refreshed.ok()) {
    DropState();
    return refreshed.status();
  }
  stats_.last_changed_rows = refreshed->rows;
  if (refreshed->full) {
    full_report_ = true;
    recorded_.clear();
    stats_.full_reads++;
  }
  const auto t_read = std::chrono::steady_clock::now();
  scheduler::IncrementalScheduler& engine = mirror_.engine();
  for (const auto& gpu : refreshed->reclaimed) {
    spdlog::debug("owner busy on {} GPU {}: its tenant jobs get a notice", gpu.node_id, gpu.gpu_index);
  }
  scheduler::RoundOptions options;
  options.full_report = full_report_;
  scheduler::Decisions d = engine.Round(now, options);
  const auto t_schedule = std::chrono::steady_clock::now();

  std::map<std::string, std::string> job_models;
  std::set<std::string> touched;
  for (const auto& a : d.assignments) {
    if (a.placements.empty()) continue;
    if (std::string model = engine.NodeModel(a.placements[0].node_id); !model.empty()) {
      job_models[a.job_id] = std::move(model);
    }
    for (const auto& p : a.placements) touched.insert(p.node_id);
  }
  for (const auto& p : d.preemptions) {
    for (auto& n : engine.JobNodes(p.job_id)) touched.insert(std::move(n));
  }
  // Each pool's market_rounds row, when its figures changed or the last one is a minute old.
  std::vector<store::RoundPrice> prices;
  for (const auto& p : d.prices) {
    store::RoundPrice rp;
    rp.gpu_model = p.gpu_model;
    rp.clearing = p.clearing_price;
    auto r = mirror_.market().reserve_price.find(p.gpu_model);
    rp.reserve = r == mirror_.market().reserve_price.end() ? 0 : r->second;
    rp.capacity_units = p.capacity_units;
    rp.used_units = p.used_units;
    rp.pending_jobs = static_cast<int>(p.pending_jobs);
    rp.at_ms = now;
    auto last = recorded_.find(rp.gpu_model);
    if (last != recorded_.end() && now - last->second.at_ms < kPriceRowEveryMs &&
        std::tie(last->second.clearing, last->second.reserve, last->second.capacity_units, last->second.used_units,
                 last->second.pending_jobs) ==
            std::tie(rp.clearing, rp.reserve, rp.capacity_units, rp.used_units, rp.pending_jobs)) {
      continue;  // nothing new for this pool
    }
    prices.push_back(rp);
  }
  // The engine now assumes its decisions hold; if they cannot be persisted, start over.
  if (absl::Status s =
          ctx_.jobs->ApplyDecisions(d, job_models, now, ctx_.config.preemption_notice_ms, prices);
      !s.ok()) {
    DropState();
    return s;
  }
  full_report_ = false;
  for (const auto& rp : prices) recorded_[rp.gpu_model] = rp;
  if (ctx_.config.price_history_ms > 0 && now - pruned_at_ms_ >= kPruneEveryMs) {
    pruned_at_ms_ = now;
    auto pruned = ctx_.market->PruneRounds(now - ctx_.config.price_history_ms);
    if (!pruned.ok()) {
      spdlog::warn("could not delete old market price rows: {}", pruned.status().ToString());
    } else if (*pruned > 0) {
      spdlog::info("deleted {} market price rows older than {} ms", *pruned, ctx_.config.price_history_ms);
    }
  }
  ctx_.workers->Nudge(std::vector<std::string>(touched.begin(), touched.end()));
  if (!d.assignments.empty() || !d.preemptions.empty()) {
    spdlog::info("round: {} started, {} preempted, {} pending", d.assignments.size(), d.preemptions.size(),
                 engine.pending_jobs());
  }
  const auto t_end = std::chrono::steady_clock::now();
  auto ms = [](auto a, auto b) { return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count(); };
  stats_.last_read_ms = ms(t0, t_read);
  stats_.last_schedule_ms = ms(t_read, t_schedule);
  stats_.last_persist_ms = ms(t_schedule, t_end);
  stats_.rounds++;
  stats_.assignments += static_cast<int64_t>(d.assignments.size());
  stats_.preemptions += static_cast<int64_t>(d.preemptions.size());
  stats_.last_round_ms = ms(t0, t_end);
  return absl::OkStatus();
}

}  // namespace surplus::control
