// The scheduling leader's change feed against a real PostgreSQL: a full read, then only
// what changed, and nothing lost to a transaction that commits late (it began before a
// read and committed after it).

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "src/api/batchers.h"
#include "src/store/job_store.h"
#include "src/store/market_store.h"
#include "src/store/migrations.h"
#include "src/store/nudges.h"
#include "src/store/scheduler_feed.h"
#include "tests/support/pg_instance.h"

namespace surplus::testing {
namespace {

class FeedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    url_ = SharedPg().CreateDatabase(absl::StrCat("feed_", info->name()));
    pool_ = std::make_unique<store::PgPool>(url_, 2);
    ASSERT_TRUE(store::Migrate(*pool_).ok());
    Exec("INSERT INTO tenants (id, created_ms) VALUES ('t', 1)");
    Exec("INSERT INTO nodes (name, gpu_model, registered_ms) VALUES ('n1', 'H100-80GB', 1)");
    Exec("INSERT INTO gpus (node, idx, owner_idle_since_ms) VALUES ('n1', 0, 1), ('n1', 1, 1)");
  }

  void Exec(const std::string& sql) {
    pqxx::connection c(url_);
    pqxx::work tx(c);
    tx.exec(sql);
    tx.commit();
  }

  static std::string InsertJob(const std::string& id) {
    return absl::StrCat(
        "INSERT INTO jobs (id, tenant_id, request_id, spec_json, shape_kind, gpus_per_node, tier,"
        " bid_micros, state, created_ms) VALUES ('", id, "', 't', '", id, "', '{}', 'gpus', 1, 'spot',"
        " 1000000, 'PENDING', 1)");
  }

  static std::vector<std::string> Ids(const std::vector<scheduler::JobView>& jobs) {
    std::vector<std::string> out;
    for (const auto& j : jobs) out.push_back(j.id);
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string url_;
  std::unique_ptr<store::PgPool> pool_;
};

TEST_F(FeedTest, FullReadThenOnlyChanges) {
  Exec(InsertJob("a"));
  Exec(InsertJob("b"));
  store::PgSchedulerFeed feed(*pool_);
  auto all = feed.ReadChanges();  // no watermark yet: everything
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(all->full);
  EXPECT_EQ(Ids(all->jobs), (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(all->nodes.size(), 1u);
  EXPECT_EQ(all->nodes[0].view.gpus.size(), 2u);
  ASSERT_EQ(all->nodes[0].owner.size(), 2u);
  EXPECT_EQ(all->nodes[0].owner[1].idle_since_ms, 1);

  // Nothing changed: an empty read (rows read again only while a writer was in flight).
  auto none = feed.ReadChanges();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->full);
  EXPECT_TRUE(none->jobs.empty());
  EXPECT_TRUE(none->nodes.empty());

  // A new job, a cancelled one, a GPU the owner took back.
  Exec(InsertJob("c"));
  Exec("UPDATE jobs SET state = 'CANCELLED' WHERE id = 'a'");
  Exec("UPDATE gpus SET owner_reclaimed = true WHERE node = 'n1' AND idx = 1");
  auto changes = feed.ReadChanges();
  ASSERT_TRUE(changes.ok());
  EXPECT_EQ(Ids(changes->jobs), (std::vector<std::string>{"c"}));
  EXPECT_EQ(changes->ended_jobs, (std::vector<std::string>{"a"}));
  ASSERT_EQ(changes->nodes.size(), 1u);  // the whole node, both GPUs
  ASSERT_EQ(changes->nodes[0].owner.size(), 2u);
  EXPECT_TRUE(changes->nodes[0].owner[1].reclaimed);

  // Columns the scheduler writes every round (reason, price) and telemetry that does not
  // affect placement are not changes.
  Exec("UPDATE jobs SET reason = 'outbid', price_micros = 5 WHERE id = 'b'");
  Exec("UPDATE gpus SET utilization_pct = 50, memory_used_mib = 1000");
  auto quiet = feed.ReadChanges();
  ASSERT_TRUE(quiet.ok());
  EXPECT_TRUE(quiet->jobs.empty());
  EXPECT_TRUE(quiet->nodes.empty());

  // A lost node is reported gone; cordon and drain are node changes.
  Exec("UPDATE nodes SET lost = true");
  auto lost = feed.ReadChanges();
  ASSERT_TRUE(lost.ok());
  EXPECT_EQ(lost->gone_nodes, (std::vector<std::string>{"n1"}));
  Exec("UPDATE nodes SET lost = false, cordoned = true, draining = true");
  auto drained = feed.ReadChanges();
  ASSERT_TRUE(drained.ok());
  ASSERT_EQ(drained->nodes.size(), 1u);
  EXPECT_TRUE(drained->nodes[0].view.draining);
  EXPECT_TRUE(drained->nodes[0].view.cordoned);
}

TEST_F(FeedTest, TelemetryBatchAppliesEachNodesReportsInOrder) {
  Exec("INSERT INTO nodes (name, gpu_model, registered_ms) VALUES ('n2', 'H100-80GB', 1)");
  Exec("INSERT INTO gpus (node, idx, owner_idle_since_ms) VALUES ('n2', 0, 1)");
  store::PgSchedulerFeed feed(*pool_);
  ASSERT_TRUE(feed.ReadChanges().ok());
  auto report = [](const std::string& node, int64_t at, std::vector<std::pair<int, bool>> gpus) {
    store::TelemetryReport r{node, {}, at};
    for (const auto& [idx, owner_busy] : gpus) {
      auto* g = r.telemetry.add_gpus();
      g->set_index(idx);
      g->set_healthy(true);
      g->set_utilization_pct(owner_busy ? 90 : 0);
      g->set_owner_processes(owner_busy ? 1 : 0);
    }
    return r;
  };
  // In one batch: n1's owner takes GPU 1 and then leaves it again; n2 reports once.
  store::PgNodeStore nodes(*pool_);
  ASSERT_TRUE(nodes
                  .RecordTelemetryBatch({report("n1", 5000, {{0, false}, {1, true}}), report("n2", 5100, {{0, true}}),
                                         report("n1", 6000, {{0, false}, {1, false}})})
                  .ok());
  pqxx::connection c(url_);
  pqxx::work tx(c);
  std::map<std::string, std::string> gpu;
  for (const auto& r : tx.exec("SELECT node || '/' || idx, owner_busy::text || ' ' || owner_idle_since_ms FROM gpus")) {
    gpu[r[0].as<std::string>()] = r[1].as<std::string>();
  }
  EXPECT_EQ(gpu["n1/0"], "false 1");     // idle all along: its window keeps running
  EXPECT_EQ(gpu["n1/1"], "false 6000");  // busy, then idle again from the later report on
  EXPECT_EQ(gpu["n2/0"], "true 0");
  std::map<std::string, int64_t> heartbeat;
  for (const auto& r : tx.exec("SELECT name, last_heartbeat_ms FROM nodes")) {
    heartbeat[r[0].as<std::string>()] = r[1].as<int64_t>();
  }
  EXPECT_EQ(heartbeat["n1"], 6000);
  EXPECT_EQ(heartbeat["n2"], 5100);
  tx.commit();
  // The scheduler sees both nodes change (owner state), and nothing else.
  auto changes = feed.ReadChanges();
  ASSERT_TRUE(changes.ok()) << changes.status();
  EXPECT_EQ(changes->nodes.size(), 2u);
  EXPECT_TRUE(changes->jobs.empty());
}

TEST_F(FeedTest, GpuFiguresAreRewrittenWhenTheyMoveFarOrAreOldAndStateAtOnce) {
  store::PgNodeStore nodes(*pool_);
  auto report = [&](int64_t at, int util, int64_t mem, bool healthy = true) {
    store::TelemetryReport r{"n1", {}, at};
    auto* g = r.telemetry.add_gpus();
    g->set_index(0);
    g->set_healthy(healthy);
    g->set_utilization_pct(util);
    g->set_memory_used_mib(mem);
    ASSERT_TRUE(nodes.RecordTelemetryBatch({r}).ok());
  };
  // What a dashboard reads, and when it was written.
  auto shown = [&] {
    pqxx::connection c(url_);
    pqxx::work tx(c);
    return tx.exec("SELECT utilization_pct || ' ' || memory_used_mib || ' ' || healthy::text || ' ' || sampled_ms"
                   " FROM gpus WHERE node = 'n1' AND idx = 0")[0][0]
        .as<std::string>();
  };
  report(10'000, 50, 20'000);
  EXPECT_EQ(shown(), "50 20000 true 10000");  // first figures
  report(11'000, 55, 22'000);
  EXPECT_EQ(shown(), "50 20000 true 10000");  // small moves wait
  report(12'000, 60, 22'000);
  EXPECT_EQ(shown(), "60 22000 true 12000");  // 10 points from what is shown
  report(13'000, 60, 26'096);
  EXPECT_EQ(shown(), "60 26096 true 13000");  // 4 GiB
  report(14'000, 61, 26'000);
  report(22'999, 62, 26'000);
  EXPECT_EQ(shown(), "60 26096 true 13000");
  report(23'000, 62, 26'000);
  EXPECT_EQ(shown(), "62 26000 true 23000");  // 10 s old
  report(23'500, 62, 26'000);
  EXPECT_EQ(shown(), "62 26000 true 23000");  // unchanged figures are never rewritten
  report(24'000, 63, 26'000, /*healthy=*/false);
  EXPECT_EQ(shown(), "63 26000 false 24000");  // a state change is written at once
}

TEST(TelemetryWriteFilter, PassesOnlyWhatChangesSomething) {
  store::TelemetryWriteFilter filter(/*heartbeat_every_ms=*/2500, /*whole_every_ms=*/10'000);
  auto report = [](int64_t at, std::vector<int> utils, bool healthy = true) {
    store::TelemetryReport r{"n1", {}, at};
    for (size_t i = 0; i < utils.size(); ++i) {
      auto* g = r.telemetry.add_gpus();
      g->set_index(static_cast<int>(i));
      g->set_healthy(healthy || i > 0);
      g->set_utilization_pct(utils[i]);
      g->set_memory_used_mib(1000);
    }
    return r;
  };
  auto gpus = [](const std::optional<store::TelemetryReport>& r) {
    std::vector<int> out;
    if (r) {
      for (const auto& g : r->telemetry.gpus()) out.push_back(g.index());
    }
    return out;
  };
  auto first = filter.Due(report(1000, {50, 50}));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(gpus(first), (std::vector<int>{0, 1}));  // the first report is written whole
  EXPECT_TRUE(first->whole);
  filter.Written(*first);
  EXPECT_FALSE(filter.Due(report(2000, {50, 50})).has_value());  // nothing new
  EXPECT_FALSE(filter.Due(report(3000, {55, 45})).has_value());  // small moves
  auto heartbeat = filter.Due(report(3500, {55, 45}));
  ASSERT_TRUE(heartbeat.has_value());  // the heartbeat is due: the node must not look lost
  EXPECT_TRUE(gpus(heartbeat).empty());
  filter.Written(*heartbeat);
  auto moved = filter.Due(report(4000, {50, 62}));
  EXPECT_EQ(gpus(moved), (std::vector<int>{1}));  // 12 points: only that GPU
  EXPECT_FALSE(moved->whole);
  filter.Written(*moved);
  EXPECT_EQ(gpus(filter.Due(report(4500, {50, 62}, /*healthy=*/false))), (std::vector<int>{0}));  // health
  EXPECT_FALSE(filter.Due(report(5000, {51, 62})).has_value());
  // Every 10 s the whole state goes again: what a database crash lost comes back.
  auto whole = filter.Due(report(11'000, {51, 62}));
  EXPECT_EQ(gpus(whole), (std::vector<int>{0, 1}));
  filter.Written(*whole);
  EXPECT_FALSE(filter.Due(report(12'000, {51, 62})).has_value());
  filter.Reset();  // a write failed
  EXPECT_EQ(gpus(filter.Due(report(12'000, {51, 62}))), (std::vector<int>{0, 1}));
}

TEST_F(FeedTest, OneBadTelemetryReportDoesNotLoseTheOthersInItsBatch) {
  Exec("INSERT INTO nodes (name, gpu_model, registered_ms) VALUES ('n2', 'H100-80GB', 1), ('n3', 'H100-80GB', 1)");
  store::PgNodeStore nodes(*pool_);
  api::TelemetryBatcher batcher(nodes, 1024);
  auto report = [](const std::string& node, int64_t at, const std::string& health_reason) {
    store::TelemetryReport r{node, {}, at};
    auto* g = r.telemetry.add_gpus();
    g->set_index(0);
    g->set_healthy(health_reason.empty());
    g->set_health_reason(health_reason);
    return r;
  };
  // Hold n1's row so the writer's first batch (n1's report) waits; the next two reports
  // queue behind it and are written together: one of them cannot be stored (a NUL byte).
  pqxx::connection holder(url_);
  pqxx::work hold(holder);
  hold.exec("SELECT 1 FROM nodes WHERE name = 'n1' FOR UPDATE");
  std::promise<absl::Status> first, bad, good;
  batcher.Add(report("n1", 7000, ""), [&](const absl::Status& s) { first.set_value(s); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  batcher.Add(report("n2", 7100, std::string("XID 79\0garbage", 14)), [&](const absl::Status& s) { bad.set_value(s); });
  batcher.Add(report("n3", 7200, ""), [&](const absl::Status& s) { good.set_value(s); });
  hold.commit();
  EXPECT_TRUE(first.get_future().get().ok());
  EXPECT_FALSE(bad.get_future().get().ok());
  EXPECT_TRUE(good.get_future().get().ok());
  pqxx::connection c(url_);
  pqxx::work tx(c);
  std::map<std::string, int64_t> heartbeat;
  for (const auto& r : tx.exec("SELECT name, last_heartbeat_ms FROM nodes")) {
    heartbeat[r[0].as<std::string>()] = r[1].as<int64_t>();
  }
  EXPECT_EQ(heartbeat["n1"], 7000);
  EXPECT_EQ(heartbeat["n2"], 0);
  EXPECT_EQ(heartbeat["n3"], 7200);
}

TEST_F(FeedTest, NudgesReachOtherReplicasInFullAndNotTheSender) {
  std::mutex mu;
  std::vector<std::string> got;
  std::atomic<int> connected{0};
  store::NudgeListener listener(
      url_, "replica-a",
      [&](const std::vector<std::string>& nodes) {
        std::lock_guard<std::mutex> lock(mu);
        got.insert(got.end(), nodes.begin(), nodes.end());
      },
      [&] { ++connected; });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (connected == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(connected, 1);
  // 2,000 names do not fit in one notification (payloads stay under 8,000 bytes).
  std::vector<std::string> many;
  for (int i = 0; i < 2000; ++i) many.push_back(absl::StrCat("gpu-node-", i));
  ASSERT_TRUE(store::PublishNudges(*pool_, "replica-a", {"mine"}).ok());  // its own: skipped
  ASSERT_TRUE(store::PublishNudges(*pool_, "replica-b", many).ok());
  auto count = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return got.size();
  };
  while (count() < many.size() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(got, many);
}

TEST_F(FeedTest, OldMarketPriceRowsArePruned) {
  store::PgMarketStore market(*pool_);
  for (int64_t at : {1'000, 5'000, 9'000}) {
    store::RoundPrice p;
    p.gpu_model = "H100-80GB";
    p.clearing = at;
    p.at_ms = at;
    ASSERT_TRUE(market.RecordRound({p}).ok());
  }
  auto pruned = market.PruneRounds(6'000);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 2);
  auto latest = market.LatestPrices();
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->at("H100-80GB").clearing, 9'000);
  EXPECT_EQ(*market.PruneRounds(6'000), 0);
}

TEST_F(FeedTest, LatestPricesAreEachPoolsLastRowByInsertion) {
  store::PgMarketStore market(*pool_);
  auto empty = market.LatestPrices();
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->empty());
  auto row = [](const std::string& model, Micros clearing, int64_t at_ms, int pending) {
    store::RoundPrice p;
    p.gpu_model = model;
    p.clearing = clearing;
    p.reserve = 100;
    p.capacity_units = 56;
    p.used_units = 7;
    p.pending_jobs = pending;
    p.at_ms = at_ms;
    return p;
  };
  // A100 goes quiet early; H100 and H200 interleave; H200's last row carries an earlier
  // clock (another leader's) and still wins, being the last written.
  ASSERT_TRUE(market.RecordRound({row("A100-80GB", 1'500'000, 1'000, 3)}).ok());
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(market.RecordRound({row("H100-80GB", 2'000'000 + i, 2'000 + i, i),
                                    row("H200-141GB", 3'000'000 + i, 2'000 + i, i)})
                    .ok());
  }
  ASSERT_TRUE(market.RecordRound({row("H200-141GB", 3'999'999, 50, 9)}).ok());
  auto latest = market.LatestPrices();
  ASSERT_TRUE(latest.ok()) << latest.status();
  ASSERT_EQ(latest->size(), 3u);
  const store::RoundPrice& a = latest->at("A100-80GB");
  EXPECT_EQ(a.clearing, 1'500'000);
  EXPECT_EQ(a.reserve, 100);
  EXPECT_EQ(a.capacity_units, 56);
  EXPECT_EQ(a.used_units, 7);
  EXPECT_EQ(a.pending_jobs, 3);
  EXPECT_EQ(a.at_ms, 1'000);
  EXPECT_EQ(latest->at("H100-80GB").clearing, 2'000'199);
  EXPECT_EQ(latest->at("H100-80GB").pending_jobs, 199);
  EXPECT_EQ(latest->at("H200-141GB").clearing, 3'999'999);
  EXPECT_EQ(latest->at("H200-141GB").at_ms, 50);
}

TEST_F(FeedTest, ATransactionThatCommitsAfterAReadIsSeenByTheNext) {
  store::PgSchedulerFeed feed(*pool_);
  ASSERT_TRUE(feed.ReadAll().ok());
  // A writer takes its transaction id, then a read happens, then the writer commits.
  pqxx::connection writer_conn(url_);
  pqxx::work writer(writer_conn);
  writer.exec(InsertJob("late"));
  Exec(InsertJob("early"));  // starts and commits after "late" began
  auto first = feed.ReadChanges();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(Ids(first->jobs), (std::vector<std::string>{"early"}));
  writer.commit();
  auto second = feed.ReadChanges();
  ASSERT_TRUE(second.ok());
  const auto ids = Ids(second->jobs);
  EXPECT_NE(std::find(ids.begin(), ids.end(), "late"), ids.end()) << "a late commit was lost";
  // Once nothing is in flight the feed is quiet again.
  auto third = feed.ReadChanges();
  ASSERT_TRUE(third.ok());
  EXPECT_TRUE(third->jobs.empty());
}

TEST_F(FeedTest, ReservePricesAndQuotasAreAlwaysComplete) {
  Exec("INSERT INTO reserve_prices VALUES ('H100-80GB', 1500000, 1)");
  Exec("UPDATE tenants SET max_gpus = 4 WHERE id = 't'");
  store::PgSchedulerFeed feed(*pool_);
  ASSERT_TRUE(feed.ReadAll().ok());
  auto r = feed.ReadChanges();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->reserve_prices.at("H100-80GB"), 1'500'000);
  EXPECT_EQ(r->quotas.at("t").max_gpus, 4);
}

TEST_F(FeedTest, PoolRepricingMovesOnlyTheJobsItShould) {
  // Running: a spot job bidding $5 paying $1.50, one bidding $1.20 (pays its bid), one under
  // notice, an on-demand job, and a spot job on another model.
  auto running = [&](const std::string& id, const std::string& tier, int64_t bid, int64_t price, bool stopping,
                     const std::string& model) {
    Exec(InsertJob(id));
    Exec(absl::StrCat("UPDATE jobs SET state = 'RUNNING', attempt = 1, tier = '", tier, "', bid_micros = ", bid,
                      ", price_micros = ", price, ", stop_requested = ", stopping ? "true" : "false",
                      ", assigned_model = '", model, "' WHERE id = '", id, "'"));
  };
  running("high", "spot", 5'000'000, 1'500'000, false, "H100-80GB");
  running("low", "spot", 1'200'000, 1'200'000, false, "H100-80GB");
  running("leaving", "spot", 5'000'000, 1'500'000, true, "H100-80GB");
  running("od", "on_demand", 0, 4'000'000, false, "H100-80GB");
  running("other", "spot", 5'000'000, 1'500'000, false, "A100-80GB");
  store::PgJobStore jobs(*pool_);
  scheduler::Decisions d;
  d.repriced_pools.push_back({"H100-80GB", 1'800'000});
  ASSERT_TRUE(jobs.ApplyDecisions(d, {}, 5000, 1000).ok());
  pqxx::connection c(url_);
  pqxx::work tx(c);
  std::map<std::string, int64_t> price;
  for (const auto& r : tx.exec("SELECT id, price_micros FROM jobs")) price[r[0].as<std::string>()] = r[1].as<int64_t>();
  EXPECT_EQ(price["high"], 1'800'000);
  EXPECT_EQ(price["low"], 1'200'000);
  EXPECT_EQ(price["leaving"], 1'500'000);
  EXPECT_EQ(price["od"], 4'000'000);
  EXPECT_EQ(price["other"], 1'500'000);
  // Billing sees the change from the round's time on, for that job only.
  EXPECT_EQ(tx.exec("SELECT job_id, effective_ms, price_micros FROM job_prices")[0][0].as<std::string>(), "high");
  EXPECT_EQ(tx.exec("SELECT count(*) FROM job_prices")[0][0].as<int>(), 1);
  EXPECT_EQ(tx.exec("SELECT effective_ms FROM job_prices")[0][0].as<int64_t>(), 5000);
}

TEST_F(FeedTest, OutbidReasonsQuoteTheClearingPriceWhenRead) {
  // Two pending jobs bidding $1.00 (InsertJob's bid), one outbid in the H100 pool.
  Exec(InsertJob("outbid"));
  Exec(InsertJob("waiting"));
  store::PgJobStore jobs(*pool_);
  scheduler::Decisions d;
  // A round's market_rounds row for its pool, as the scheduling leader writes it.
  auto row = [](Micros clearing, int64_t at_ms) {
    store::RoundPrice p;
    p.gpu_model = "H100-80GB";
    p.clearing = clearing;
    p.capacity_units = 14;
    p.used_units = 14;
    p.pending_jobs = 2;
    p.at_ms = at_ms;
    return std::vector<store::RoundPrice>{p};
  };
  d.pending_reasons["outbid"] = {scheduler::OutbidReason(1'500'000, 1'000'000), "H100-80GB"};
  d.pending_reasons["waiting"] = {"no node with 1 free H100-80GB GPU", ""};
  ASSERT_TRUE(jobs.ApplyDecisions(d, {}, 5000, 1000, row(1'500'000, 5000)).ok());
  auto reason = [&](const std::string& id) {
    auto job = jobs.GetJob(id, "t");
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->reason() : std::string();
  };
  EXPECT_EQ(reason("outbid"), "outbid: clearing price $1.50/GPU-h > your bid $1.00");
  EXPECT_EQ(reason("waiting"), "no node with 1 free H100-80GB GPU");
  // The price moves; the round reports no job (only the price changed): readers see the new
  // price, and no job row was rewritten.
  auto xid = [&](const std::string& id) {
    pqxx::connection c(url_);
    pqxx::work tx(c);
    return tx.exec_params("SELECT xmin::text FROM jobs WHERE id = $1", id)[0][0].as<std::string>();
  };
  const std::string before = xid("outbid");
  ASSERT_TRUE(jobs.ApplyDecisions(scheduler::Decisions{}, {}, 6000, 1000, row(2'100'000, 6000)).ok());
  EXPECT_EQ(reason("outbid"), "outbid: clearing price $2.10/GPU-h > your bid $1.00");
  EXPECT_EQ(xid("outbid"), before);
  // Watchers compare versions rendered the same way, so they see the new price once.
  auto versions = jobs.Versions({"outbid"});
  ASSERT_TRUE(versions.ok()) << versions.status();
  EXPECT_EQ(versions->at("outbid").reason, "outbid: clearing price $2.10/GPU-h > your bid $1.00");
  // A reader never quotes a price that is not above the bid; the stored text stands (a
  // round that moves the price below a bid reports that job in the same transaction).
  ASSERT_TRUE(jobs.ApplyDecisions(scheduler::Decisions{}, {}, 7000, 1000, row(900'000, 7000)).ok());
  EXPECT_EQ(reason("outbid"), "outbid: clearing price $1.50/GPU-h > your bid $1.00");
  // Once the job starts, its reason is its own again.
  scheduler::Decisions start;
  start.assignments.push_back({"outbid", {{"n1", {0}, "", 0}}, 900'000});
  ASSERT_TRUE(jobs.ApplyDecisions(start, {{"outbid", "H100-80GB"}}, 8000, 1000).ok());
  EXPECT_EQ(reason("outbid"), "starting on n1");
}

}  // namespace
}  // namespace surplus::testing
