// HarvestTracker: which GPUs may be sold, and when the owner takes them back.

#include <gtest/gtest.h>

#include "scheduler/harvest.h"
#include "tests/unit/scheduler_test_util.h"

namespace surplus::scheduler {
namespace {

using namespace surplus::scheduler::testing;  // NOLINT

TEST(HarvestTracker, OffersAfterIdleWindow) {
  HarvestTracker t(HarvestConfig{/*idle_window_ms=*/5 * kMinute});
  const GpuRef g{"n1", 0};
  EXPECT_FALSE(t.State(g, 0).known);
  EXPECT_TRUE(t.State(g, 0).owner_busy);  // never seen: not ours to sell
  t.Observe({g, /*owner_busy=*/true, 0});
  t.Observe({g, false, 1 * kMinute});  // idle from minute 1
  struct Case {
    int64_t at;
    bool offerable;
  };
  // Window 5 min from minute 1: offerable from minute 6 on.
  for (const Case& c : {Case{2 * kMinute, false}, Case{6 * kMinute - 1, false},
                        Case{6 * kMinute, true}, Case{60 * kMinute, true}}) {
    EXPECT_EQ(t.State(g, c.at).offerable, c.offerable) << c.at;
  }
  EXPECT_EQ(t.NextOfferable(2 * kMinute), 6 * kMinute);
}

TEST(HarvestTracker, SyncFromStoredRecordsKeepsTheWindowAcrossLeaders) {
  // A new leader syncs from what another replica stored: the GPU went idle at minute 1,
  // so the window ends at minute 6 whenever this tracker was created.
  HarvestTracker t(HarvestConfig{5 * kMinute});
  NodeView n;
  n.id = "n1";
  n.gpus.resize(2);
  n.gpus[1].index = 1;
  const std::vector<OwnerRecord> idle = {{false, false, 1 * kMinute}, {true, false, 0}};
  t.SyncNode(idle, 4 * kMinute, &n);
  EXPECT_FALSE(n.gpus[0].owner_busy);
  EXPECT_FALSE(n.gpus[0].offerable);
  EXPECT_TRUE(n.gpus[1].owner_busy);
  EXPECT_FALSE(n.gpus[1].offerable);
  EXPECT_EQ(t.State({"n1", 0}, 4 * kMinute).idle_since_ms, 1 * kMinute);
  t.SyncNode(idle, 6 * kMinute, &n);
  EXPECT_TRUE(n.gpus[0].offerable);
  (void)t.TakeReclaimed();

  // The owner reclaims GPU 0 explicitly: busy at once and reported; released at minute 9,
  // it is offered again from minute 14.
  t.SyncNode({{false, true, 0}, {true, false, 0}}, 7 * kMinute, &n);
  EXPECT_TRUE(n.gpus[0].owner_busy);
  EXPECT_EQ(t.TakeReclaimed(), (std::vector<GpuRef>{GpuRef{"n1", 0}}));
  t.SyncNode({{false, false, 9 * kMinute}, {true, false, 0}}, 9 * kMinute, &n);
  EXPECT_FALSE(n.gpus[0].offerable);
  t.SyncNode({{false, false, 9 * kMinute}, {true, false, 0}}, 14 * kMinute, &n);
  EXPECT_TRUE(n.gpus[0].offerable);
  // A record without a time (the store had none) starts the window at the sync.
  HarvestTracker fresh(HarvestConfig{5 * kMinute});
  fresh.Sync({"n2", 0}, OwnerRecord{false, false, 0}, 20 * kMinute);
  EXPECT_FALSE(fresh.State({"n2", 0}, 24 * kMinute).offerable);
  EXPECT_TRUE(fresh.State({"n2", 0}, 25 * kMinute).offerable);
}

TEST(HarvestTracker, ReclaimIsImmediateAndReported) {
  HarvestTracker t(HarvestConfig{5 * kMinute});
  const GpuRef g{"n1", 3};
  t.Observe({g, false, 0});
  EXPECT_TRUE(t.State(g, 10 * kMinute).offerable);
  EXPECT_TRUE(t.TakeReclaimed().empty());
  t.Observe({g, true, 11 * kMinute});  // owner processes appear
  EXPECT_TRUE(t.State(g, 11 * kMinute).owner_busy);
  EXPECT_EQ(t.TakeReclaimed(), std::vector<GpuRef>{g});
  EXPECT_TRUE(t.TakeReclaimed().empty());  // reported once
  // Explicit reclaim holds even when telemetry says idle.
  t.Observe({g, false, 12 * kMinute});
  t.Reclaim(g, 13 * kMinute);
  t.Observe({g, false, 14 * kMinute});
  EXPECT_TRUE(t.State(g, 30 * kMinute).owner_busy);
  t.Release(g, 31 * kMinute);
  EXPECT_FALSE(t.State(g, 32 * kMinute).offerable);  // window restarts at release
  EXPECT_TRUE(t.State(g, 36 * kMinute).offerable);
}

TEST(HarvestTracker, IgnoresStaleObservations) {
  HarvestTracker t(HarvestConfig{kMinute});
  const GpuRef g{"n1", 0};
  t.Observe({g, true, 10 * kMinute});
  t.Observe({g, false, 5 * kMinute});  // older: ignored
  EXPECT_TRUE(t.State(g, 20 * kMinute).owner_busy);
}

TEST(HarvestTracker, DrivesScheduleOwnerReclaim) {
  HarvestTracker t(HarvestConfig{kMinute});
  for (int i = 0; i < 2; ++i) t.Observe({GpuRef{"n1", i}, false, 0});
  Snapshot s;
  s.now_ms = 10 * kMinute;
  s.nodes = {Node("n1", 2)};
  s.market = Market();
  s.jobs = {RunningWhole(Spot("r", 2 * kDollar, JobShape::WholeGpus(1), 1), "n1", {1}, 0)};
  t.Observe({GpuRef{"n1", 1}, true, s.now_ms});
  t.Apply(s.now_ms, &s.nodes);
  EXPECT_TRUE(s.nodes[0].gpus[0].offerable);
  EXPECT_TRUE(s.nodes[0].gpus[1].owner_busy);
  const Decisions d = Schedule(s);
  ASSERT_EQ(d.preemptions.size(), 1u);
  EXPECT_EQ(d.preemptions[0].cause, PreemptCause::kOwnerReclaim);
}

}  // namespace
}  // namespace surplus::scheduler
