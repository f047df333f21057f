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

bool SameMarket(const scheduler::MarketConfig& a, const scheduler::MarketConfig& b) {
  return a.reserve_price == b.reserve_price && a.list_price == b.list_price && a.quotas == b.quotas &&
         a.min_preempt_gap == b.min_preempt_gap &&
         a.min_runtime_before_preempt_ms == b.min_runtime_before_preempt_ms &&
         a.preempt_notice_ms == b.preempt_notice_ms;
}
}  // namespace

SchedulingLoop::SchedulingLoop(api::ApiContext& ctx, std::string database_url, std::chrono::milliseconds interval)
    : ctx_(ctx),
      url_(std::move(database_url)),
      interval_(interval),
      feed_(*ctx.pool),
      harvest_(scheduler::HarvestConfig{ctx.config.harvest.owner_idle_window_ms}) {}

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
    } else if (engine_) {
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

void SchedulingLoop::ClearState() {
  engine_.reset();
  nodes_.clear();
  recorded_.clear();
  offerable_at_.clear();
  harvest_ = scheduler::HarvestTracker(harvest_.config());
}

void SchedulingLoop::DropState() {
  ClearState();
  feed_.Reset();
}

scheduler::NodeView SchedulingLoop::NodeNow(const store::StoredNode& node, int64_t now_ms) {
  scheduler::NodeView view = node.view;
  harvest_.SyncNode(node.owner, now_ms, &view);
  for (const auto& g : view.gpus) {
    if (g.owner_busy || g.offerable) continue;
    const auto st = harvest_.State(scheduler::GpuRef{view.id, g.index}, now_ms);
    offerable_at_.emplace(st.idle_since_ms + harvest_.config().idle_window_ms, view.id);
  }
  return view;
}

void SchedulingLoop::Absorb(store::FeedRead read, int64_t now_ms) {
  scheduler::MarketConfig market = api::MarketFromStore(ctx_.config.market, read);
  if (read.full || !engine_) {
    ClearState();  // the feed continues from this read
    scheduler::Snapshot snap;
    snap.now_ms = now_ms;
    snap.market = market;
    for (auto& n : read.nodes) {
      snap.nodes.push_back(NodeNow(n, now_ms));
      const std::string id = n.view.id;
      nodes_[id] = std::move(n);
    }
    snap.jobs = std::move(read.jobs);
    engine_ = std::make_unique<scheduler::IncrementalScheduler>(snap);
    market_ = std::move(market);
    full_report_ = true;
    stats_.full_reads++;
    return;
  }
  scheduler::SnapshotDelta delta;
  if (!SameMarket(market, market_)) {
    delta.market = market;
    market_ = std::move(market);
  }
  std::set<std::string> upserted;
  for (const auto& id : read.gone_nodes) {
    if (nodes_.erase(id) == 0) continue;
    harvest_.ForgetNode(id);
    delta.remove_nodes.push_back(id);
  }
  for (auto& n : read.nodes) {
    const std::string id = n.view.id;
    delta.upsert_nodes.push_back(NodeNow(n, now_ms));
    nodes_[id] = std::move(n);
    upserted.insert(id);
  }
  // Idle GPUs whose harvest window ended since the previous round are offered now.
  while (!offerable_at_.empty() && offerable_at_.begin()->first <= now_ms) {
    const std::string id = offerable_at_.begin()->second;
    offerable_at_.erase(offerable_at_.begin());
    auto it = nodes_.find(id);
    if (it == nodes_.end() || !upserted.insert(id).second) continue;
    delta.upsert_nodes.push_back(NodeNow(it->second, now_ms));
  }
  delta.upsert_jobs = std::move(read.jobs);
  delta.remove_jobs = std::move(read.ended_jobs);
  engine_->ApplyDelta(delta);
}

absl::Status SchedulingLoop::RunRound() {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t now = NowMs();
  auto lost = ctx_.jobs->MarkLostNodes(ctx_.config.harvest.lost_after_ms, now);
  if (!lost.ok()) return lost.status();
  for (const auto& n : *lost) spdlog::warn("node {} lost: no report for {} ms", n, ctx_.config.harvest.lost_after_ms);

  auto read = engine_ ? feed_.ReadChanges() : feed_.ReadAll();
  if (!read.ok()) {
    DropState();
    return read.status();
  }
  stats_.last_changed_rows = static_cast<int64_t>(read->nodes.size() + read->gone_nodes.size() +
                                                  read->jobs.size() + read->ended_jobs.size());
  const auto t_read = std::chrono::steady_clock::now();
  Absorb(std::move(*read), now);
  for (const auto& gpu : harvest_.TakeReclaimed()) {
    spdlog::debug("owner busy on {} GPU {}: its tenant jobs get a notice", gpu.node_id, gpu.gpu_index);
  }
  scheduler::RoundOptions options;
  options.full_report = full_report_;
  scheduler::Decisions d = engine_->Round(now, options);
  const auto t_schedule = std::chrono::steady_clock::now();

  std::map<std::string, std::string> job_models;
  std::set<std::string> touched;
  for (const auto& a : d.assignments) {
    if (!a.placements.empty()) {
      auto it = nodes_.find(a.placements[0].node_id);
      if (it != nodes_.end()) job_models[a.job_id] = it->second.view.gpu_model;
    }
    for (const auto& p : a.placements) touched.insert(p.node_id);
  }
  for (const auto& p : d.preemptions) {
    for (auto& n : engine_->JobNodes(p.job_id)) touched.insert(std::move(n));
  }
  // The engine now assumes its decisions hold; if they cannot be persisted, start over.
  if (absl::Status s = ctx_.jobs->ApplyDecisions(d, job_models, now, ctx_.config.preemption_notice_ms); !s.ok()) {
    DropState();
    return s;
  }
  full_report_ = false;
  std::vector<store::RoundPrice> prices;
  for (const auto& p : d.prices) {
    store::RoundPrice rp;
    rp.gpu_model = p.gpu_model;
    rp.clearing = p.clearing_price;
    auto r = market_.reserve_price.find(p.gpu_model);
    rp.reserve = r == market_.reserve_price.end() ? 0 : r->second;
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
  if (!prices.empty()) {
    if (absl::Status s = ctx_.market->RecordRound(prices); !s.ok()) return s;
  }
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
                 engine_->pending_jobs());
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
