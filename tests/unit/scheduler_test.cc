// Market rules and packing of Schedule(), table-driven where the rule has cases.

#include <gtest/gtest.h>

#include <random>

#include "absl/strings/str_cat.h"

#include "scheduler/capacity_index.h"
#include "scheduler/incremental.h"
#include "scheduler/quote.h"
#include "scheduler/scheduler.h"
#include "tests/unit/scheduler_test_util.h"

namespace surplus::scheduler {
namespace {

using namespace surplus::scheduler::testing;  // NOLINT

TEST(Schedule, SpareCapacityClearsAtReservePrice) {
  Snapshot s;
  s.nodes = {Node("n1", 2)};
  s.jobs = {Spot("a", 3 * kDollar, JobShape::WholeGpus(1), 1)};
  s.market = Market(/*reserve=*/1 * kDollar);
  const Decisions d = Schedule(s);
  // One GPU stays free, so nothing was turned away: clearing = reserve = $1.00, and the job
  // pays min(clearing, bid) = $1.00.
  ASSERT_NE(FindAssignment(d, "a"), nullptr);
  EXPECT_EQ(FindAssignment(d, "a")->price, 1 * kDollar);
  EXPECT_EQ(ClearingPrice(d), 1 * kDollar);
  ASSERT_EQ(d.prices.size(), 1u);
  EXPECT_EQ(d.prices[0].capacity_units, 14);  // 2 GPUs x 7 units
  EXPECT_EQ(d.prices[0].used_units, 7);
}

TEST(Schedule, ClearingPriceIsHighestBidTurnedAway) {
  Snapshot s;
  s.nodes = {Node("n1", 2)};
  s.market = Market(/*reserve=*/1 * kDollar);
  s.jobs = {Spot("b150", 1'500'000, JobShape::WholeGpus(1), 1),
            Spot("b300", 3 * kDollar, JobShape::WholeGpus(1), 2),
            Spot("b200", 2 * kDollar, JobShape::WholeGpus(1), 3),
            Spot("b250", 2'500'000, JobShape::WholeGpus(1), 4)};
  const Decisions d = Schedule(s);
  // Bid order 3.00, 2.50 | 2.00, 1.50: two GPUs admit the first two; the highest bid turned
  // away is $2.00, so both winners pay $2.00.
  ASSERT_NE(FindAssignment(d, "b300"), nullptr);
  ASSERT_NE(FindAssignment(d, "b250"), nullptr);
  EXPECT_EQ(FindAssignment(d, "b300")->price, 2 * kDollar);
  EXPECT_EQ(FindAssignment(d, "b250")->price, 2 * kDollar);
  EXPECT_EQ(ClearingPrice(d), 2 * kDollar);
  // $2.00 set the price itself: it lacks room, it was not outbid. $1.50 was outbid.
  EXPECT_EQ(Reason(d, "b200"), "no node with 1 free H100-80GB GPU");
  EXPECT_EQ(Reason(d, "b150"), "outbid: clearing price $2.00/GPU-h > your bid $1.50");
}

// Each GPU model is its own pool with its own price: a full H100 pool clears at the
// highest H100 bid turned away while the A100 pool, with room to spare, stays at its
// reserve. A job that names no model runs where there is room and pays that pool's price;
// a slice on an A100 takes a placement of the A100's table.
TEST(Schedule, EachGpuModelClearsItsOwnPrice) {
  Snapshot s;
  s.nodes = {Node("h1", 1), Node("a1", 2, "", "A100-80GB")};
  s.market = Market(/*reserve=*/1 * kDollar);
  s.market.reserve_price["A100-80GB"] = 800'000;
  s.market.list_price["A100-80GB"] = 2 * kDollar;
  auto pinned = [](JobView j, const std::string& model) {
    j.gpu_model = model;
    return j;
  };
  s.jobs = {pinned(Spot("h500", 5 * kDollar, JobShape::WholeGpus(1), 1), "H100-80GB"),
            pinned(Spot("h300", 3 * kDollar, JobShape::WholeGpus(1), 2), "H100-80GB"),
            Spot("any250", 2'500'000, JobShape::WholeGpus(1), 3),
            pinned(Spot("a4g", 1'500'000, JobShape::Slice("4g.40gb"), 4), "A100-80GB")};
  const Decisions d = Schedule(s);
  EXPECT_EQ(ClearingPrice(d, "H100-80GB"), 3 * kDollar);
  EXPECT_EQ(ClearingPrice(d, "A100-80GB"), 800'000);
  ASSERT_NE(FindAssignment(d, "h500"), nullptr);
  EXPECT_EQ(FindAssignment(d, "h500")->price, 3 * kDollar);
  EXPECT_EQ(FindAssignment(d, "h500")->placements[0].node_id, "h1");
  EXPECT_EQ(FindAssignment(d, "h300"), nullptr);
  EXPECT_EQ(Reason(d, "h300"), "no node with 1 free H100-80GB GPU");
  const Assignment* any = FindAssignment(d, "any250");
  ASSERT_NE(any, nullptr) << Reason(d, "any250");
  EXPECT_EQ(any->placements[0].node_id, "a1");
  EXPECT_EQ(any->price, 800'000);
  const Assignment* slice = FindAssignment(d, "a4g");
  ASSERT_NE(slice, nullptr) << Reason(d, "a4g");
  EXPECT_EQ(slice->placements[0].node_id, "a1");
  EXPECT_EQ(slice->placements[0].slot_start, 0);
  EXPECT_EQ(slice->price, 800'000);
}

TEST(Schedule, EqualBidsAdmitInSubmitOrder) {
  Snapshot s;
  s.nodes = {Node("n1", 1)};
  s.market = Market();
  s.jobs = {Spot("late", 2 * kDollar, JobShape::WholeGpus(1), 7),
            Spot("early", 2 * kDollar, JobShape::WholeGpus(1), 3)};
  const Decisions d = Schedule(s);
  EXPECT_NE(FindAssignment(d, "early"), nullptr);
  EXPECT_EQ(FindAssignment(d, "late"), nullptr);
}

TEST(Schedule, BidBelowReserveStaysPending) {
  Snapshot s;
  s.nodes = {Node("n1", 1)};
  s.market = Market(/*reserve=*/1 * kDollar);
  s.jobs = {Spot("cheap", 500'000, JobShape::WholeGpus(1), 1)};
  const Decisions d = Schedule(s);
  EXPECT_TRUE(d.assignments.empty());
  EXPECT_EQ(Reason(d, "cheap"), "bid $0.50 below reserve price $1.00 for H100-80GB");
}

TEST(Schedule, OnDemandFirstAtListPrice) {
  Snapshot s;
  s.nodes = {Node("n1", 1)};
  s.market = Market(/*reserve=*/1 * kDollar, /*list=*/4 * kDollar);
  s.jobs = {Spot("rich", 10 * kDollar, JobShape::WholeGpus(1), 1),
            OnDemand("od", JobShape::WholeGpus(1), 2)};
  const Decisions d = Schedule(s);
  // On-demand is admitted before any bid and pays the $4.00 list price. The $10 bid is the
  // highest turned away: clearing = $10.00.
  ASSERT_NE(FindAssignment(d, "od"), nullptr);
  EXPECT_EQ(FindAssignment(d, "od")->price, 4 * kDollar);
  EXPECT_EQ(ClearingPrice(d), 10 * kDollar);
  EXPECT_EQ(Reason(d, "rich"), "no node with 1 free H100-80GB GPU");
}

TEST(Schedule, UnknownModelAndShapesGetReasons) {
  Snapshot s;
  s.nodes = {Node("n1", 4)};
  s.market = Market();
  JobView b200 = Spot("b200", 2 * kDollar, JobShape::WholeGpus(1), 1);
  b200.gpu_model = "B200";
  JobView big = Spot("big", 2 * kDollar, JobShape::WholeGpus(8), 2);
  JobView odd = Spot("odd", 2 * kDollar, JobShape::Slice("1g.18gb"), 3);
  odd.gpu_model = "H100-80GB";
  s.jobs = {b200, big, odd};
  const Decisions d = Schedule(s);
  EXPECT_EQ(Reason(d, "b200"), "no node of model B200");
  EXPECT_EQ(Reason(d, "big"), "no node has 8 GPUs");
  EXPECT_EQ(Reason(d, "odd"), "GPU model H100-80GB has no slice profile 1g.18gb");
}

TEST(Schedule, OwnerHealthAndDrainPreempt) {
  struct Case {
    const char* name;
    bool owner_busy, healthy, offerable, cordoned, draining;
    bool preempted;
    PreemptCause cause;
  };
  const Case cases[] = {
      {"owner", true, true, true, false, false, true, PreemptCause::kOwnerReclaim},
      {"unhealthy", false, false, true, false, false, true, PreemptCause::kUnhealthy},
      {"owner wins over health", true, false, true, false, false, true, PreemptCause::kOwnerReclaim},
      {"drain", false, true, true, false, true, true, PreemptCause::kCordoned},
      // Cordon and a not-yet-offerable GPU stop new work but leave running jobs alone.
      {"cordon", false, true, true, true, false, false, PreemptCause::kOutbid},
      {"not offerable", false, true, false, false, false, false, PreemptCause::kOutbid},
  };
  for (const Case& c : cases) {
    Snapshot s;
    s.now_ms = 100 * kMinute;
    s.nodes = {Node("n1", 2)};
    s.nodes[0].gpus[0].owner_busy = c.owner_busy;
    s.nodes[0].gpus[0].healthy = c.healthy;
    s.nodes[0].gpus[0].offerable = c.offerable;
    s.nodes[0].cordoned = c.cordoned;
    s.nodes[0].draining = c.draining;
    s.market = Market();
    JobView od = RunningWhole(OnDemand("run", JobShape::WholeGpus(1), 1), "n1", {0}, 0);
    s.jobs = {od, Spot("new", 2 * kDollar, JobShape::WholeGpus(2), 2)};
    const Decisions d = Schedule(s);
    const Preemption* p = FindPreemption(d, "run");
    EXPECT_EQ(p != nullptr, c.preempted) << c.name;
    if (p && c.preempted) {
      EXPECT_EQ(p->cause, c.cause) << c.name;
      EXPECT_FALSE(p->reason.empty());
    }
    // Nothing new lands on GPU 0 in any case: the 2-GPU job never fits.
    EXPECT_EQ(FindAssignment(d, "new"), nullptr) << c.name;
  }
}

TEST(Schedule, OutbidNeedsGapAndMinimumRuntime) {
  struct Case {
    const char* name;
    Micros pending_bid;
    int64_t ran_ms;
    bool preempt;
  };
  // Gap $1.00, minimum runtime 5 min, running bid $1.00.
  const Case cases[] = {
      {"gap met, ran 10 min", 3 * kDollar, 10 * kMinute, true},
      {"gap exactly met", 2 * kDollar, 10 * kMinute, true},
      {"gap too small ($0.50)", 1'500'000, 10 * kMinute, false},
      {"too young (1 min)", 3 * kDollar, 1 * kMinute, false},
  };
  for (const Case& c : cases) {
    Snapshot s;
    s.now_ms = 1000 * kMinute;
    s.nodes = {Node("n1", 1)};
    s.market = Market(/*reserve=*/500'000);
    s.market.min_preempt_gap = 1 * kDollar;
    s.market.min_runtime_before_preempt_ms = 5 * kMinute;
    s.jobs = {RunningWhole(Spot("low", 1 * kDollar, JobShape::WholeGpus(1), 1), "n1", {0},
                           s.now_ms - c.ran_ms),
              Spot("high", c.pending_bid, JobShape::WholeGpus(1), 2)};
    const Decisions d = Schedule(s);
    const Preemption* p = FindPreemption(d, "low");
    ASSERT_EQ(p != nullptr, c.preempt) << c.name;
    // "high" is blocked either way, so it sets the clearing price.
    EXPECT_EQ(ClearingPrice(d), c.pending_bid) << c.name;
    if (c.preempt) {
      EXPECT_EQ(p->cause, PreemptCause::kOutbid);
      EXPECT_EQ(p->reason, "outbid: clearing price " + FormatUsd(c.pending_bid) +
                               "/GPU-h > your bid $1.00");
      EXPECT_EQ(Reason(d, "high"), "waiting for 1 preempted job to free H100-80GB capacity");
      EXPECT_EQ(d.running_prices.count("low"), 0u);  // leaving: no new price
    } else {
      // Keeps running and pays at most its bid: min($X, $1.00) = $1.00.
      EXPECT_EQ(d.running_prices.at("low"), 1 * kDollar) << c.name;
    }
  }
}

TEST(Schedule, OnDemandIsNeverOutbid) {
  Snapshot s;
  s.now_ms = 1000 * kMinute;
  s.nodes = {Node("n1", 1)};
  s.market = Market();
  s.jobs = {RunningWhole(OnDemand("od", JobShape::WholeGpus(1), 1), "n1", {0}, 0),
            Spot("whale", 1000 * kDollar, JobShape::WholeGpus(1), 2)};
  const Decisions d = Schedule(s);
  EXPECT_TRUE(d.preemptions.empty());
  EXPECT_EQ(d.running_prices.at("od"), 4 * kDollar);  // list price
}

TEST(Schedule, VacatingCapacityIsNotPreemptedTwice) {
  Snapshot s;
  s.now_ms = 1000 * kMinute;
  s.nodes = {Node("n1", 2)};
  s.market = Market();
  JobView leaving = RunningWhole(Spot("leaving", 1 * kDollar, JobShape::WholeGpus(1), 1), "n1", {0}, 0);
  leaving.preempting = true;
  s.jobs = {leaving,
            RunningWhole(Spot("other", 1 * kDollar, JobShape::WholeGpus(1), 2), "n1", {1}, 0),
            Spot("high", 5 * kDollar, JobShape::WholeGpus(1), 3)};
  const Decisions d = Schedule(s);
  // "leaving" already got its notice; its GPU is enough for "high", so "other" stays.
  EXPECT_TRUE(d.preemptions.empty());
  EXPECT_EQ(Reason(d, "high"), "waiting for 1 preempted job to free H100-80GB capacity");
}

TEST(Schedule, SlicesKeepLargeShapesPlaceable) {
  // One H100. A 3g.40gb may start at slot 0 or 4; a 4g.40gb only at 0. Placing the 3g at
  // 4 keeps the 4g placeable: both fit.
  Snapshot s;
  s.nodes = {Node("n1", 1)};
  s.market = Market();
  s.jobs = {Spot("s3", 3 * kDollar, JobShape::Slice("3g.40gb"), 1),
            Spot("s4", 2 * kDollar, JobShape::Slice("4g.40gb"), 2)};
  const Decisions d = Schedule(s);
  ASSERT_NE(FindAssignment(d, "s3"), nullptr);
  ASSERT_NE(FindAssignment(d, "s4"), nullptr);
  EXPECT_EQ(FindAssignment(d, "s3")->placements[0].slot_start, 4);
  EXPECT_EQ(FindAssignment(d, "s4")->placements[0].slot_start, 0);
}

TEST(Schedule, SliceGoesToPartlyUsedGpu) {
  // GPU 0 has a 1g.10gb at slot 0, GPU 1 is empty: a new 1g.10gb goes next to the first
  // one and GPU 1 stays whole for whole-GPU jobs.
  Snapshot s;
  s.nodes = {Node("n1", 2)};
  s.market = Market();
  s.jobs = {RunningSlice(Spot("r", 2 * kDollar, JobShape::Slice("1g.10gb"), 1), "n1", 0, 0, 0),
            Spot("s", 2 * kDollar, JobShape::Slice("1g.10gb"), 2),
            Spot("w", 2 * kDollar, JobShape::WholeGpus(1), 3)};
  const Decisions d = Schedule(s);
  ASSERT_NE(FindAssignment(d, "s"), nullptr);
  ASSERT_NE(FindAssignment(d, "w"), nullptr);
  EXPECT_EQ(FindAssignment(d, "s")->placements[0].gpu_indices, std::vector<int>{0});
  EXPECT_EQ(FindAssignment(d, "w")->placements[0].gpu_indices, std::vector<int>{1});
}

TEST(Schedule, NoPlacementReasonNamesTheProfile) {
  Snapshot s;
  s.nodes = {Node("n1", 1)};
  s.market = Market();
  s.jobs = {RunningSlice(Spot("r", 9 * kDollar, JobShape::Slice("1g.10gb"), 1), "n1", 0, 0, 0),
            Spot("s4", 2 * kDollar, JobShape::Slice("4g.40gb"), 2)};
  const Decisions d = Schedule(s);
  EXPECT_EQ(Reason(d, "s4"), "no 4g.40gb placement free");
}

TEST(Schedule, QuotaLimitsGpusAndPendingJobs) {
  Snapshot s;
  s.nodes = {Node("n1", 8)};
  s.market = Market();
  s.market.quotas["t"] = TenantQuota{/*max_gpus=*/2, /*max_pending_jobs=*/0};
  s.market.quotas["u"] = TenantQuota{/*max_gpus=*/0, /*max_pending_jobs=*/1};
  s.jobs = {Spot("t1", 3 * kDollar, JobShape::WholeGpus(1), 1, "t"),
            Spot("t2", 3 * kDollar, JobShape::Slice("3g.40gb"), 2, "t"),
            Spot("t3", 3 * kDollar, JobShape::WholeGpus(1), 3, "t"),
            Spot("u1", 2 * kDollar, JobShape::WholeGpus(1), 4, "u"),
            Spot("u2", 2 * kDollar, JobShape::WholeGpus(1), 5, "u")};
  const Decisions d = Schedule(s);
  // t: 1 GPU + 3/7 GPU = 10/7 = 1.43 GPUs; another whole GPU would make 2.43 > 2.
  EXPECT_NE(FindAssignment(d, "t1"), nullptr);
  EXPECT_NE(FindAssignment(d, "t2"), nullptr);
  EXPECT_EQ(Reason(d, "t3"), "over quota: tenant t has 1.43 GPUs (max 2), job needs 1");
  // u: only its oldest pending job is considered.
  EXPECT_NE(FindAssignment(d, "u1"), nullptr);
  EXPECT_EQ(Reason(d, "u2"), "over quota: tenant u has 2 pending jobs (max 1)");
}

TEST(Schedule, GangsAreAllOrNothingOnOneFabric) {
  Snapshot s;
  s.nodes = {Node("a1", 8, "A"), Node("a2", 8, "A"), Node("b1", 8, "B")};
  s.market = Market();
  // a2 has 4 GPUs busy.
  s.jobs = {RunningWhole(Spot("busy", 9 * kDollar, JobShape::WholeGpus(4), 1), "a2", {0, 1, 2, 3}, 0),
            Spot("g4", 5 * kDollar, JobShape::Gang(2, 4), 2),
            Spot("g8", 4 * kDollar, JobShape::Gang(2, 8), 3)};
  const Decisions d = Schedule(s);
  // 2 x 4 (higher bid, first) fits only on a1 + a2: fabric B has one node.
  // 2 x 8 then finds no fabric with two free 8-GPU nodes, and gets nothing partial.
  EXPECT_EQ(FindAssignment(d, "g8"), nullptr);
  const Assignment* g4 = FindAssignment(d, "g4");
  ASSERT_NE(g4, nullptr);
  ASSERT_EQ(g4->placements.size(), 2u);
  EXPECT_NE(g4->placements[0].node_id, "b1");
  EXPECT_NE(g4->placements[1].node_id, "b1");
  EXPECT_EQ(g4->placements[0].gpu_indices.size(), 4u);
  EXPECT_EQ(g4->placements[1].gpu_indices.size(), 4u);
}

TEST(Schedule, ReservationBackfillsOnlyJobsThatEndBeforeIt) {
  Snapshot s;
  s.now_ms = 1000 * kMinute;
  s.nodes = {Node("n1", 8)};
  s.market = Market();
  s.market.min_runtime_before_preempt_ms = 1000 * kMinute;  // no preemption here
  std::vector<JobView> jobs;
  for (int g = 0; g < 4; ++g) {
    JobView r = RunningWhole(Spot("r" + std::to_string(g), 1 * kDollar, JobShape::WholeGpus(1), g),
                             "n1", {g}, s.now_ms);
    r.max_runtime_ms = 60 * kMinute;  // all end at now + 60 min
    jobs.push_back(r);
  }
  jobs.push_back(Spot("big", 5 * kDollar, JobShape::WholeGpus(8), 10));
  JobView short_job = Spot("short", 2 * kDollar, JobShape::WholeGpus(1), 11);
  short_job.max_runtime_ms = 30 * kMinute;  // ends at +30 < +60: may backfill
  JobView long_job = Spot("long", 2 * kDollar, JobShape::WholeGpus(1), 12);
  long_job.max_runtime_ms = 120 * kMinute;  // ends at +120 > +60: may not
  JobView open_job = Spot("open", 2 * kDollar, JobShape::WholeGpus(1), 13);  // unknown runtime
  jobs.push_back(short_job);
  jobs.push_back(long_job);
  jobs.push_back(open_job);
  s.jobs = jobs;
  const Decisions d = Schedule(s);
  ASSERT_EQ(d.reservations.size(), 1u);
  EXPECT_EQ(d.reservations[0].job_id, "big");
  EXPECT_EQ(d.reservations[0].start_ms, s.now_ms + 60 * kMinute);
  EXPECT_EQ(Reason(d, "big"),
            "waiting for reservation: H100-80GB capacity is held for this job, expected to "
            "start in ~60 min");
  EXPECT_NE(FindAssignment(d, "short"), nullptr);
  EXPECT_EQ(FindAssignment(d, "long"), nullptr);
  EXPECT_EQ(FindAssignment(d, "open"), nullptr);
}

TEST(Schedule, SameSnapshotSameDecisions) {
  Snapshot s;
  s.now_ms = 50 * kMinute;
  s.nodes = {Node("n1", 8, "A"), Node("n2", 8, "A")};
  s.market = Market();
  for (int i = 0; i < 30; ++i) {
    s.jobs.push_back(Spot("j" + std::to_string(i), (1 + i % 5) * kDollar,
                          i % 3 == 0 ? JobShape::Slice("2g.20gb") : JobShape::WholeGpus(1 + i % 2), i));
  }
  const Decisions a = Schedule(s);
  const Decisions b = Schedule(s);
  ASSERT_EQ(a.assignments.size(), b.assignments.size());
  for (size_t i = 0; i < a.assignments.size(); ++i) {
    EXPECT_EQ(a.assignments[i].job_id, b.assignments[i].job_id);
    EXPECT_EQ(a.assignments[i].placements[0].node_id, b.assignments[i].placements[0].node_id);
    EXPECT_EQ(a.assignments[i].placements[0].gpu_indices, b.assignments[i].placements[0].gpu_indices);
    EXPECT_EQ(a.assignments[i].price, b.assignments[i].price);
  }
  EXPECT_EQ(a.pending_reasons, b.pending_reasons);
}

TEST(Quote, ReportsPriceAndOutcome) {
  Snapshot s;
  s.nodes = {Node("n1", 1)};
  s.market = Market(/*reserve=*/1 * kDollar);
  Quote q = QuoteJob(s, Spot("", 3 * kDollar, JobShape::WholeGpus(1), 0));
  EXPECT_TRUE(q.would_start_now);
  EXPECT_EQ(q.price, 1 * kDollar);  // spare capacity: reserve price
  EXPECT_EQ(q.gpu_model, "H100-80GB");

  s.jobs = {RunningWhole(Spot("r", 5 * kDollar, JobShape::WholeGpus(1), 1), "n1", {0}, 0)};
  q = QuoteJob(s, Spot("", 3 * kDollar, JobShape::WholeGpus(1), 0));
  EXPECT_FALSE(q.would_start_now);
  EXPECT_EQ(q.reason, "no node with 1 free H100-80GB GPU");
  ASSERT_EQ(q.prices.size(), 1u);
  EXPECT_EQ(q.prices[0].clearing_price, 3 * kDollar);  // the candidate is the bid turned away
  ASSERT_EQ(q.current_prices.size(), 1u);
  EXPECT_EQ(q.current_prices[0].clearing_price, 1 * kDollar);  // without it, nobody is turned away
}

// Found by fuzzing: a snapshot holding two rows for one job (pending, then running) left a
// queue entry for the replaced row, which a later round "started" as a job with no id once
// the job ended.
TEST(IncrementalScheduler, ALaterRowForTheSameJobLeavesNothingQueued) {
  Snapshot s;
  s.nodes = {Node("n1", 2)};
  s.market = Market();
  s.jobs = {Spot("a", 3 * kDollar, JobShape::WholeGpus(1), 1),
            RunningWhole(Spot("a", 3 * kDollar, JobShape::WholeGpus(1), 1), "n1", {0}, 0)};
  IncrementalScheduler engine(s);
  EXPECT_EQ(engine.pending_jobs(), 0u);
  EXPECT_EQ(engine.running_jobs(), 1u);
  SnapshotDelta ended;
  ended.remove_jobs = {"a"};
  engine.ApplyDelta(ended);
  const Decisions d = engine.Round(kMinute);
  EXPECT_TRUE(d.assignments.empty()) << Fingerprint(d);
  EXPECT_TRUE(d.pending_reasons.empty()) << Fingerprint(d);
}

// A kept engine decides who is old enough to be outbid from the round's time and the
// market's minimum runtime, whichever way either moves between rounds.
TEST(IncrementalScheduler, MinimumRuntimeHoldsAcrossRoundsClockAndMarketChanges) {
  Snapshot s;
  s.nodes = {Node("n1", 1)};
  s.market = Market(/*reserve=*/500'000);
  s.market.min_preempt_gap = 1 * kDollar;
  s.market.min_runtime_before_preempt_ms = 5 * kMinute;
  s.jobs = {RunningWhole(Spot("low", 1 * kDollar, JobShape::WholeGpus(1), 1), "n1", {0}, 100 * kMinute)};
  SnapshotDelta high;
  high.upsert_jobs = {Spot("high", 3 * kDollar, JobShape::WholeGpus(1), 2)};
  // "low" runs 3, then 6 minutes with nobody bidding (old enough from then on); then
  // "high" arrives.
  auto aged = [&](IncrementalScheduler& engine) {
    EXPECT_TRUE(engine.Round(103 * kMinute).preemptions.empty());
    EXPECT_TRUE(engine.Round(106 * kMinute).preemptions.empty());
    engine.ApplyDelta(high);
  };
  Snapshot with_high = s;
  with_high.jobs.push_back(high.upsert_jobs[0]);
  {
    // The next round is stamped earlier (a clock step back): at 4 minutes it is young again.
    IncrementalScheduler engine(s);
    aged(engine);
    EXPECT_EQ(FindPreemption(engine.Round(104 * kMinute), "low"), nullptr);
    with_high.now_ms = 104 * kMinute;
    EXPECT_EQ(FindPreemption(Schedule(with_high), "low"), nullptr);  // as a fresh round says
    const Preemption* p = FindPreemption(engine.Round(105 * kMinute), "low");
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->cause, PreemptCause::kOutbid);
  }
  {
    // The minimum runtime grows to 20 minutes: at 10 minutes it is protected again, and at
    // 20 it is not.
    IncrementalScheduler engine(s);
    aged(engine);
    SnapshotDelta market;
    market.market = s.market;
    market.market->min_runtime_before_preempt_ms = 20 * kMinute;
    engine.ApplyDelta(market);
    EXPECT_EQ(FindPreemption(engine.Round(110 * kMinute), "low"), nullptr);
    with_high.market = *market.market;
    with_high.now_ms = 110 * kMinute;
    EXPECT_EQ(FindPreemption(Schedule(with_high), "low"), nullptr);
    EXPECT_NE(FindPreemption(engine.Round(120 * kMinute), "low"), nullptr);
  }
}

TEST(IncrementalScheduler, RepricesAPoolInOneEntryWhenItsClearingPriceMoves) {
  Snapshot s;
  s.nodes = {Node("n1", 2)};
  s.market = Market();
  s.jobs = {RunningWhole(Spot("r1", 5 * kDollar, JobShape::WholeGpus(1), 1), "n1", {0}, 0),
            RunningWhole(Spot("r2", 2 * kDollar, JobShape::WholeGpus(1), 2), "n1", {1}, 0),
            Spot("p", 3 * kDollar / 2, JobShape::WholeGpus(1), 3)};
  IncrementalScheduler engine(s);
  Decisions d1 = engine.Round(kMinute);
  EXPECT_EQ(ClearingPrice(d1), 3 * kDollar / 2);
  EXPECT_EQ(d1.running_prices.at("r1"), 3 * kDollar / 2);  // first sight: per job
  EXPECT_TRUE(d1.repriced_pools.empty());
  // A higher bid that cannot displace anyone moves the clearing price: one entry for the
  // pool, no per-job prices.
  const JobView p2 = Spot("p2", 18 * kDollar / 10, JobShape::WholeGpus(1), 4);
  SnapshotDelta delta;
  delta.upsert_jobs = {p2};
  engine.ApplyDelta(delta);
  Decisions d2 = engine.Round(2 * kMinute);
  EXPECT_TRUE(d2.preemptions.empty());
  EXPECT_TRUE(d2.running_prices.empty());
  ASSERT_EQ(d2.repriced_pools.size(), 1u);
  EXPECT_EQ(d2.repriced_pools[0].gpu_model, "H100-80GB");
  EXPECT_EQ(d2.repriced_pools[0].clearing_price, 18 * kDollar / 10);
  // It says what a full round on the same world says job by job.
  s.jobs.push_back(p2);
  s.now_ms = 2 * kMinute;
  const Decisions fresh = Schedule(s);
  EXPECT_EQ(fresh.running_prices.at("r1"), 18 * kDollar / 10);
  EXPECT_EQ(fresh.running_prices.at("r2"), 18 * kDollar / 10);
  // Nothing moves: nothing reported.
  Decisions d3 = engine.Round(3 * kMinute);
  EXPECT_TRUE(d3.repriced_pools.empty());
  EXPECT_TRUE(d3.running_prices.empty());
}

TEST(IncrementalScheduler, OutbidReasonsAreNotReportedAgainWhenOnlyTheClearingPriceMoves) {
  Snapshot s;
  s.nodes = {Node("n1", 1)};
  s.market = Market();
  s.jobs = {RunningWhole(Spot("r", 5 * kDollar, JobShape::WholeGpus(1), 1), "n1", {0}, 0),
            Spot("low", 3 * kDollar / 2, JobShape::WholeGpus(1), 2),
            Spot("mid", 18 * kDollar / 10, JobShape::WholeGpus(1), 3)};
  IncrementalScheduler engine(s);
  Decisions d1 = engine.Round(kMinute);
  ASSERT_EQ(ClearingPrice(d1), 18 * kDollar / 10);
  ASSERT_TRUE(d1.pending_reasons.count("low"));
  EXPECT_EQ(d1.pending_reasons.at("low").text, "outbid: clearing price $1.80/GPU-h > your bid $1.50");
  EXPECT_EQ(d1.pending_reasons.at("low").outbid_model, "H100-80GB");
  EXPECT_EQ(d1.pending_reasons.at("mid").text, "no node with 1 free H100-80GB GPU");
  EXPECT_EQ(d1.pending_reasons.at("mid").outbid_model, "");
  // A higher bid moves the clearing price to $2.00: "mid" is now outbid and is reported;
  // "low" stays outbid in the same pool at the same bid, so only its price moved and it is
  // not reported again (a reader renders it with the new clearing price).
  SnapshotDelta delta;
  delta.upsert_jobs = {Spot("high", 2 * kDollar, JobShape::WholeGpus(1), 4)};
  engine.ApplyDelta(delta);
  Decisions d2 = engine.Round(2 * kMinute);
  ASSERT_EQ(ClearingPrice(d2), 2 * kDollar);
  EXPECT_FALSE(d2.pending_reasons.count("low"));
  ASSERT_TRUE(d2.pending_reasons.count("mid"));
  EXPECT_EQ(d2.pending_reasons.at("mid").text, OutbidReason(2 * kDollar, 18 * kDollar / 10));
  EXPECT_EQ(d2.pending_reasons.at("mid").outbid_model, "H100-80GB");
  // A full report still says everything, with the current price.
  RoundOptions full;
  full.full_report = true;
  Decisions d3 = engine.Round(3 * kMinute, full);
  EXPECT_EQ(d3.pending_reasons.at("low").text, "outbid: clearing price $2.00/GPU-h > your bid $1.50");
  // When "high" leaves, the price falls back to $1.80: "mid" is no longer outbid and is
  // reported; "low" is still outbid and is not.
  SnapshotDelta gone;
  gone.remove_jobs = {"high"};
  engine.ApplyDelta(gone);
  Decisions d4 = engine.Round(4 * kMinute);
  EXPECT_FALSE(d4.pending_reasons.count("low"));
  ASSERT_TRUE(d4.pending_reasons.count("mid"));
  EXPECT_EQ(d4.pending_reasons.at("mid").outbid_model, "");
}

TEST(IncrementalScheduler, ReportsOnlyChangesBetweenRounds) {
  Snapshot s;
  s.nodes = {Node("n1", 1)};
  s.market = Market();
  s.jobs = {Spot("a", 3 * kDollar, JobShape::WholeGpus(1), 1),
            Spot("b", 2 * kDollar, JobShape::WholeGpus(1), 2)};
  IncrementalScheduler engine(s);
  Decisions d1 = engine.Round(0);
  ASSERT_NE(FindAssignment(d1, "a"), nullptr);
  EXPECT_EQ(Reason(d1, "b"), "no node with 1 free H100-80GB GPU");
  // Nothing changed: nothing new to report.
  Decisions d2 = engine.Round(kMinute);
  EXPECT_TRUE(d2.assignments.empty());
  EXPECT_TRUE(d2.pending_reasons.empty());
  EXPECT_TRUE(d2.running_prices.empty());
  // "a" finishes: "b" starts.
  SnapshotDelta delta;
  delta.remove_jobs = {"a"};
  engine.ApplyDelta(delta);
  Decisions d3 = engine.Round(2 * kMinute);
  ASSERT_NE(FindAssignment(d3, "b"), nullptr);
  EXPECT_EQ(FindAssignment(d3, "b")->price, 1 * kDollar);
}

// One H100 pool of nodes with these GPU counts, every GPU usable.
int H100Pool(CapacityIndex* index, const std::vector<int>& node_gpus) {
  const int pool = index->AddPool(FindGpuModel("H100-80GB"));
  for (int gpus : node_gpus) {
    const int node = index->AddNode(pool, -1, gpus);
    for (int g = 0; g < gpus; ++g) index->SetUsable(index->NodeFirstGpu(node) + g, true);
  }
  return pool;
}

// H100 profile indices (FindGpuModel("H100-80GB") order).
constexpr int k2g = 2, k3g = 3, k4g = 4;

// Picks a place for one slice of `profile`, as the scheduler would, and takes it.
std::optional<CapacityIndex::SlicePick> TakeSlice(CapacityIndex& index, int pool, int profile) {
  auto pick = index.PickSlice(pool, profile);
  if (pick) index.SetUsed(pick->gpu, index.Used(pick->gpu) | index.Model(pool).profiles[profile].MaskAt(pick->start));
  return pick;
}

TEST(CapacityIndex, FragmentationAwareBeatsFirstFitOnMixedSlices) {
  // Two empty H100s; arrivals 1g, 1g, 4g, 4g. First fit stacks both 1g on GPU 0 at slots
  // 0 and 1, which blocks a 4g there (4g only starts at 0): the second 4g fails. Keeping
  // small slices away from the 4g placement fits all four.
  for (PackPolicy policy : {PackPolicy::kFirstFit, PackPolicy::kFragmentationAware}) {
    CapacityIndex index(policy);
    const int pool = H100Pool(&index, {2});
    ShapeWeights w;
    w.slice = {1, 0, 0, 0, 1, 0};  // 1g.10gb and 4g.40gb equally common
    w.whole = {0, 0};
    index.SetShapeWeights(pool, w);
    int placed = 0;
    for (int profile : {0, 0, 4, 4}) placed += TakeSlice(index, pool, profile).has_value() ? 1 : 0;
    EXPECT_EQ(placed, policy == PackPolicy::kFirstFit ? 3 : 4);
  }
}

TEST(CapacityIndex, SlicesDoNotDestroyCapacity) {
  // One node, two H100s: GPU 0 runs a 3g at slots 4-7 (slots 0-3 free, 4 units), GPU 1 a
  // 4g at slots 0-3 (slots 4-7 free, 3 units). A new 3g at slot 0 of GPU 0 would leave a
  // compute unit without a memory slot. At slot 4 of GPU 1 it fills that GPU exactly, and
  // a 4g still fits on GPU 0. The measure alone prefers GPU 0 (it uses up the larger
  // fragment that whole GPUs cannot use); the unit it would destroy is charged to it.
  CapacityIndex index;
  const int pool = H100Pool(&index, {2});
  const GpuModel& h100 = index.Model(pool);
  index.SetUsed(0, h100.profiles[k3g].MaskAt(4));
  index.SetUsed(1, h100.profiles[k4g].MaskAt(0));
  ShapeWeights w;
  w.slice = {0, 0, 1, 5, 1, 0};
  w.whole = {0, 10};
  index.SetShapeWeights(pool, w);
  index.Refresh(pool);
  auto pick = TakeSlice(index, pool, k3g);
  ASSERT_TRUE(pick.has_value());
  EXPECT_EQ(pick->gpu, 1);
  EXPECT_EQ(pick->start, 4);
  auto big = index.PickSlice(pool, k4g);
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->gpu, 0);
}

TEST(CapacityIndex, FragmentsAreLeftForBigSlicesOnlyWhenTheWorkloadHasThem) {
  // One node, two H100s: GPU 0 runs a 3g at slots 4-7, GPU 1 is free; a second 3g arrives.
  // At slot 0 of GPU 0 it keeps GPU 1 whole but loses a compute unit. At slot 4 of GPU 1
  // it leaves slots 0-3 there, exactly a 4g. With 4g jobs common enough to fill both such
  // fragments, that is the better place, and two 4g jobs then fit. Without 4g jobs, the
  // fragment would stay empty: the 3g pairs up and GPU 1 stays whole. (Whole-GPU jobs are
  // common enough here that the lost unit alone would not tip it.)
  for (const int64_t big_jobs : {30, 0}) {
    SCOPED_TRACE(absl::StrCat("4g weight ", big_jobs));
    CapacityIndex index;
    const int pool = H100Pool(&index, {2});
    const GpuModel& h100 = index.Model(pool);
    index.SetUsed(0, h100.profiles[k3g].MaskAt(4));
    ShapeWeights w;
    w.slice = {0, 0, 0, 5, big_jobs, 0};
    w.whole = {0, 20};
    index.SetShapeWeights(pool, w);
    index.Refresh(pool);
    auto pick = TakeSlice(index, pool, k3g);
    ASSERT_TRUE(pick.has_value());
    if (big_jobs > 0) {
      EXPECT_EQ(pick->gpu, 1);
      EXPECT_EQ(pick->start, 4);
      for (int i = 0; i < 2; ++i) {
        index.Refresh(pool);
        ASSERT_TRUE(TakeSlice(index, pool, k4g).has_value());
      }
      EXPECT_EQ(index.FreeMask(0), 0);
      EXPECT_EQ(index.FreeMask(1), 0);
    } else {
      EXPECT_EQ(pick->gpu, 0);
      EXPECT_EQ(pick->start, 0);
      EXPECT_EQ(index.FullFreeGpus(0), 1);
    }
  }
}

TEST(CapacityIndex, AFragmentABigSliceFillsButForOneUnitCountsAsOne) {
  // One node, two H100s: GPU 0 runs a 2g at slots 4-5, so slots 0-3 and the one-unit
  // slot 6 are free: a 4g fills that all but one unit. A second 2g arrives. At slot 4 of
  // GPU 1 it leaves the same fragment there, and two 4g jobs then fit. At slot 0 or 2 of
  // GPU 0 it keeps GPU 1 whole and only one 4g fits. With 4g jobs common, the fragment on
  // GPU 0 is kept for them; without 4g jobs, the 2g pairs up on GPU 0 and GPU 1 stays
  // whole. (Counting only fragments a 4g fills exactly, GPU 0 would be taken either way.)
  for (const int64_t big_jobs : {30, 0}) {
    SCOPED_TRACE(absl::StrCat("4g weight ", big_jobs));
    CapacityIndex index;
    const int pool = H100Pool(&index, {2});
    const GpuModel& h100 = index.Model(pool);
    index.SetUsed(0, h100.profiles[k2g].MaskAt(4));
    ShapeWeights w;
    w.slice = {0, 0, 5, 0, big_jobs, 0};
    w.whole = {0, 20};
    index.SetShapeWeights(pool, w);
    index.Refresh(pool);
    auto pick = TakeSlice(index, pool, k2g);
    ASSERT_TRUE(pick.has_value());
    if (big_jobs > 0) {
      EXPECT_EQ(pick->gpu, 1);
      EXPECT_EQ(pick->start, 4);
      for (int i = 0; i < 2; ++i) {
        index.Refresh(pool);
        ASSERT_TRUE(TakeSlice(index, pool, k4g).has_value()) << "4g number " << i + 1;
      }
    } else {
      EXPECT_EQ(pick->gpu, 0);
      EXPECT_EQ(index.FullFreeGpus(0), 1);
    }
  }
}

TEST(CapacityIndex, WholeNodesThatAreNotScarceDoNotCostSlicesTheirFragments) {
  // A one-GPU node whose GPU runs a 3g at slots 4-7 (slots 0-3 free, exactly a 4g), and
  // four free 8-GPU nodes. A second 3g arrives, then two 4g. Beside the first 3g it
  // destroys a compute unit and takes the first 4g's place, and each 4g then opens a GPU
  // of its own: three GPUs. On a GPU of a whole node, at slot 4, it leaves a 4g fragment
  // there too: two GPUs, filled exactly. With 5 of 85 jobs asking for 8 GPUs, four whole
  // nodes are more than they will need, and breaking one costs them nothing. When most of
  // the work is 8-GPU jobs, a whole node is worth keeping and the 3g pairs up. (Without
  // the whole slots' abundance weighed, or with the 4g credit cut by the 8-GPU jobs'
  // share alone, the 3g pairs up in both cases.)
  for (const int64_t eight_gpu_jobs : {5, 40}) {
    SCOPED_TRACE(absl::StrCat("8-GPU weight ", eight_gpu_jobs));
    CapacityIndex index;
    const int pool = H100Pool(&index, {1, 8, 8, 8, 8});
    const GpuModel& h100 = index.Model(pool);
    index.SetUsed(0, h100.profiles[k3g].MaskAt(4));
    ShapeWeights w;
    w.slice = {0, 0, 0, 10, 30, 0};
    w.whole = {0, 40, 0, 0, 0, 0, 0, 0, eight_gpu_jobs};
    index.SetShapeWeights(pool, w);
    index.Refresh(pool);
    auto pick = TakeSlice(index, pool, k3g);
    ASSERT_TRUE(pick.has_value());
    if (eight_gpu_jobs > 5) {
      EXPECT_EQ(pick->gpu, 0);
      EXPECT_EQ(pick->start, 0);
      continue;
    }
    EXPECT_NE(pick->gpu, 0);
    EXPECT_EQ(pick->start, 4);
    for (int i = 0; i < 2; ++i) {
      index.Refresh(pool);
      ASSERT_TRUE(TakeSlice(index, pool, k4g).has_value());
    }
    int full_free = 0;
    for (int node = 0; node < index.node_count(); ++node) full_free += index.FullFreeGpus(node);
    EXPECT_EQ(full_free, 31);
    EXPECT_EQ(index.FreeMask(0), 0);
    EXPECT_EQ(index.FreeMask(pick->gpu), 0);
  }
}

TEST(CapacityIndex, SmallJobsLeaveTheLastWholeNodeForTheBigJobsToCome) {
  // Two 8-GPU nodes with 800 GiB of memory: "busy" has 6 GPUs and 700 GiB taken, "empty"
  // nothing. A 1-GPU job asks for 95 GiB; the workload asks 10 GiB per compute unit. On
  // "busy" it leaves that node's last GPU without memory, so the stranding term sends it
  // to "empty". When the workload also has 8-GPU jobs, "empty" is the last whole node they
  // can have: the job goes to "busy" and an 8-GPU job still fits.
  for (const int64_t eight_gpu_jobs : {1, 0}) {
    SCOPED_TRACE(absl::StrCat("8-GPU weight ", eight_gpu_jobs));
    CapacityIndex index;
    const int pool = H100Pool(&index, {8, 8});
    const int busy = 0, empty = 1;
    for (int node : {busy, empty}) index.SetNodeHost(node, 0, 800 * 1024);
    for (int g = 0; g < 6; ++g) index.SetUsed(index.NodeFirstGpu(busy) + g, 0xFF);
    index.AddHostUse(busy, HostDemand{0, 700 * 1024}, 1);
    ShapeWeights w;
    w.slice.assign(6, 0);
    w.whole = {0, 20, 0, 0, 0, 0, 0, 0, eight_gpu_jobs};
    w.memory_mib_per_unit = 10 * 1024;
    index.SetShapeWeights(pool, w);
    index.Refresh(pool);
    const HostDemand demand{0, 95 * 1024};
    auto node = index.PickNode(pool, 1, demand);
    ASSERT_TRUE(node.has_value());
    EXPECT_EQ(*node, eight_gpu_jobs > 0 ? busy : empty);
    for (int g : index.TakeFullFreeGpus(*node, 1)) index.SetUsed(g, 0xFF);
    index.AddHostUse(*node, index.HostCharge(*node, demand, 7), 1);
    EXPECT_EQ(index.PickNode(pool, 8).has_value(), eight_gpu_jobs > 0);
  }
}

JobShape WithHost(JobShape shape, int64_t cpu_millis, int64_t memory_mib) {
  shape.cpu_millis = cpu_millis;
  shape.memory_mib = memory_mib;
  return shape;
}

// A node's CPU and memory bound what runs there: a job that asks for more than is left
// waits, saying what it needs.
TEST(Schedule, HostCpuAndMemoryLimitPlacements) {
  Snapshot s;
  s.nodes = {Node("small", 2), Node("big", 2)};
  s.nodes[0].cpu_millis = 16'000;
  s.nodes[1].cpu_millis = 64'000;
  s.market = Market();
  s.jobs = {
      Spot("a", 5 * kDollar, WithHost(JobShape::WholeGpus(1), 12'000, 0), 1),
      Spot("b", 4 * kDollar, WithHost(JobShape::WholeGpus(1), 8'000, 0), 2),
      // 60 CPUs: only "big" is that large, and a or b took some of it or all but 4 of "small".
      Spot("d", 3 * kDollar, WithHost(JobShape::Slice("1g.10gb"), 60'000, 0), 3),
  };
  const Decisions d = Schedule(s);
  ASSERT_NE(FindAssignment(d, "a"), nullptr);
  ASSERT_NE(FindAssignment(d, "b"), nullptr);
  int64_t cpus[2] = {0, 0};
  for (const char* id : {"a", "b"}) {
    cpus[FindAssignment(d, id)->placements[0].node_id == "big"] += std::string(id) == "a" ? 12'000 : 8'000;
  }
  EXPECT_LE(cpus[0], 16'000);
  EXPECT_LE(cpus[1], 64'000);
  EXPECT_EQ(FindAssignment(d, "d"), nullptr);
  EXPECT_EQ(Reason(d, "d"), "no 1g.10gb placement free on a node with 60 CPUs free");

  Snapshot m;
  m.nodes = {Node("mem", 2)};
  m.nodes[0].memory_mib = 64 * 1024;  // CPU unknown: not limited
  m.market = Market();
  m.jobs = {Spot("e", 2 * kDollar, WithHost(JobShape::Slice("1g.10gb"), 90'000, 48 * 1024), 1),
            Spot("f", 1'500'000, WithHost(JobShape::Slice("1g.10gb"), 0, 32 * 1024), 2)};
  const Decisions dm = Schedule(m);
  ASSERT_NE(FindAssignment(dm, "e"), nullptr);
  EXPECT_EQ(FindAssignment(dm, "f"), nullptr);  // 16 GiB left
  EXPECT_EQ(Reason(dm, "f"), "no 1g.10gb placement free on a node with 32 GiB free");
}

TEST(Schedule, AJobLargerThanEveryNodeSaysSo) {
  Snapshot s;
  s.nodes = {Node("n1", 8), Node("n2", 8)};
  s.nodes[0].cpu_millis = s.nodes[1].cpu_millis = 96'000;
  s.market = Market();
  // Above the reserve but below a clearing price it could not set: still not "outbid".
  s.jobs = {Spot("huge", 2 * kDollar, WithHost(JobShape::WholeGpus(1), 128'000, 0), 1),
            Spot("fits", 3 * kDollar, WithHost(JobShape::WholeGpus(1), 96'000, 0), 2)};
  const Decisions d = Schedule(s);
  EXPECT_EQ(FindAssignment(d, "huge"), nullptr);
  EXPECT_EQ(Reason(d, "huge"), "no H100-80GB node has 128 CPUs");
  EXPECT_NE(FindAssignment(d, "fits"), nullptr);
  // A node of unknown size might have it: then the job waits for a placement instead.
  s.nodes.push_back(Node("n3", 1));
  s.nodes[2].gpus[0].owner_busy = true;
  const Decisions d3 = Schedule(s);
  EXPECT_EQ(FindAssignment(d3, "huge"), nullptr);
  EXPECT_NE(Reason(d3, "huge"), "no H100-80GB node has 128 CPUs");
  EXPECT_FALSE(Reason(d3, "huge").empty());
}

TEST(Schedule, ProportionalShareCountsAgainstExplicitRequests) {
  // A 2-GPU node with 16 CPUs: a whole-GPU job asking for nothing takes half (8 CPUs), so a
  // job asking for 10 CPUs cannot share the node, though a GPU is free.
  Snapshot s;
  s.nodes = {Node("n1", 2)};
  s.nodes[0].cpu_millis = 16'000;
  s.market = Market();
  s.jobs = {RunningWhole(Spot("r", 9 * kDollar, JobShape::WholeGpus(1), 1), "n1", {0}, 0),
            Spot("big", 2 * kDollar, WithHost(JobShape::WholeGpus(1), 10'000, 0), 2),
            Spot("fits", 1'500'000, WithHost(JobShape::WholeGpus(1), 8'000, 0), 3)};
  const Decisions d = Schedule(s);
  EXPECT_EQ(FindAssignment(d, "big"), nullptr);
  EXPECT_EQ(Reason(d, "big"), "no node with 1 free H100-80GB GPU and 10 CPUs free");
  ASSERT_NE(FindAssignment(d, "fits"), nullptr);
}

TEST(Schedule, OutbiddingFreesTheVictimsHost) {
  // The victim's CPUs come back with its GPU: a higher bid that needs them displaces it.
  Snapshot s;
  s.nodes = {Node("n1", 1)};
  s.nodes[0].cpu_millis = 16'000;
  s.market = Market();
  s.market.min_preempt_gap = 0;
  s.jobs = {RunningWhole(Spot("low", 2 * kDollar, WithHost(JobShape::WholeGpus(1), 16'000, 0), 1), "n1", {0}, 0),
            Spot("high", 6 * kDollar, WithHost(JobShape::WholeGpus(1), 12'000, 0), 2),
            Spot("huge", 7 * kDollar, WithHost(JobShape::WholeGpus(1), 20'000, 0), 3)};
  s.now_ms = 60 * kMinute;
  const Decisions d = Schedule(s);
  ASSERT_NE(FindPreemption(d, "low"), nullptr);
  EXPECT_EQ(FindAssignment(d, "huge"), nullptr);  // more than the node has: displaces nobody
  EXPECT_EQ(Reason(d, "high").rfind("waiting for 1 preempted job", 0), 0u) << Reason(d, "high");
}

TEST(CapacityIndex, FragmentationAwareKeepsCpuNextToGpus) {
  // Two 2-GPU nodes: "lean" with 8 CPUs, "rich" with 24; the workload asks about 4 CPUs per
  // GPU. Arrivals: two 1-GPU jobs of 8 CPUs, then two of 1 CPU. Best fit puts the first on
  // "lean", whose other GPU is then left without CPUs, and the last job fails. Weighing the
  // stranded GPU capacity sends both heavy jobs to "rich" and all four fit.
  for (PackPolicy policy : {PackPolicy::kBestFit, PackPolicy::kFragmentationAware}) {
    CapacityIndex index(policy);
    const int pool = H100Pool(&index, {2, 2});
    const int lean = 0, rich = 1;
    index.SetNodeHost(lean, 8'000, 0);
    index.SetNodeHost(rich, 24'000, 0);
    ShapeWeights w;
    w.slice.assign(6, 0);
    w.whole = {0, 1, 0};
    w.cpu_millis_per_unit = 4'000 / 7;
    index.SetShapeWeights(pool, w);
    int placed = 0;
    for (int64_t cpus : {8'000, 8'000, 1'000, 1'000}) {
      const HostDemand demand{cpus, 0};
      auto node = index.PickNode(pool, 1, demand);
      if (!node) continue;
      EXPECT_TRUE(index.HostFits(*node, demand, 7));
      for (int g : index.TakeFullFreeGpus(*node, 1)) index.SetUsed(g, 0xFF);
      index.AddHostUse(*node, index.HostCharge(*node, demand, 7), 1);
      ++placed;
    }
    EXPECT_EQ(placed, policy == PackPolicy::kBestFit ? 3 : 4);
    EXPECT_GE(index.NodeCpuFree(lean), 0);
    EXPECT_GE(index.NodeCpuFree(rich), 0);
  }
}

// Against a brute-force search over small random fleets, and again after random changes
// to what is used and charged: a pick finds a place whenever one fits the GPUs and the
// host, and what it picks fits both. (The fragmentation-aware walk starts each free set at
// the first node whose free host may fit; a wrong start shows up here as a missed fit.)
TEST(CapacityIndex, PicksFindEveryHostFitAndOnlyFits) {
  const GpuModel& model = *FindGpuModel("H100-80GB");
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 400; ++trial) {
    const PackPolicy policy = static_cast<PackPolicy>(trial % 3);
    CapacityIndex index(policy);
    const int pool = index.AddPool(&model);
    std::vector<int> nodes;
    const int node_count = 2 + static_cast<int>(rng() % 5);
    for (int n = 0; n < node_count; ++n) {
      const int gpus = 1 + static_cast<int>(rng() % 4);
      const int node = index.AddNode(pool, /*fabric=*/0, gpus);
      nodes.push_back(node);
      index.SetNodeHost(node, rng() % 4 == 0 ? 0 : 1000 * gpus * static_cast<int64_t>(1 + rng() % 12),
                        rng() % 4 == 0 ? 0 : 8192 * gpus * static_cast<int64_t>(1 + rng() % 8));
      for (int g = 0; g < gpus; ++g) {
        const int gpu = index.NodeFirstGpu(node) + g;
        index.SetUsable(gpu, rng() % 6 != 0);
        index.SetUsed(gpu, rng() % 3 == 0 ? static_cast<uint8_t>(rng() % 256) : 0);
      }
      // Some of the node's host already taken.
      index.AddHostUse(node, HostDemand{static_cast<int64_t>(rng() % 20'000), static_cast<int64_t>(rng() % 65'536)}, 1);
    }
    ShapeWeights w;
    w.slice = {1, 1, 1, 1, 1, 0};
    w.whole = {0, 1, 1, 1, 1};
    if (rng() % 2) w.cpu_millis_per_unit = 500 + static_cast<int64_t>(rng() % 2000);
    index.SetShapeWeights(pool, w);
    for (int step = 0; step < 4; ++step) {
      const std::string at = "trial " + std::to_string(trial) + " step " + std::to_string(step);
      if (step > 0) {  // change a GPU's use and a node's charge
        const int node = nodes[rng() % nodes.size()];
        const int gpu = index.NodeFirstGpu(node) + static_cast<int>(rng() % index.NodeGpuCount(node));
        index.SetUsed(gpu, rng() % 2 ? static_cast<uint8_t>(rng() % 256) : 0);
        const HostDemand charge{static_cast<int64_t>(rng() % 8'000), static_cast<int64_t>(rng() % 32'768)};
        index.AddHostUse(node, charge, rng() % 2 && index.HostUsed(node).cpu_millis >= charge.cpu_millis &&
                                               index.HostUsed(node).memory_mib >= charge.memory_mib
                                           ? -1
                                           : 1);
      }
      const HostDemand demand{rng() % 2 ? static_cast<int64_t>(rng() % 24'000) : 0,
                              rng() % 2 ? static_cast<int64_t>(rng() % 98'304) : 0};
      const int profile = static_cast<int>(rng() % (model.profiles.size() - 1));
      const SliceProfile& prof = model.profiles[profile];
      bool slice_exists = false;
      for (int node : nodes) {
        for (int g = 0; g < index.NodeGpuCount(node); ++g) {
          const int gpu = index.NodeFirstGpu(node) + g;
          for (int start : prof.starts) {
            const uint8_t m = prof.MaskAt(start);
            slice_exists = slice_exists || ((index.FreeMask(gpu) & m) == m && index.HostFits(node, demand, prof.compute_units));
          }
        }
      }
      const auto pick = index.PickSlice(pool, profile, demand);
      ASSERT_EQ(pick.has_value(), slice_exists) << at;
      if (pick) {
        const uint8_t m = prof.MaskAt(pick->start);
        EXPECT_EQ(index.FreeMask(pick->gpu) & m, m) << at;
        EXPECT_TRUE(index.HostFits(index.GpuNode(pick->gpu), demand, prof.compute_units)) << at;
      }
      const int want = 1 + static_cast<int>(rng() % 3);
      int fitting_nodes = 0;
      for (int node : nodes) {
        if (index.FullFreeGpus(node) >= want && index.HostFits(node, demand, want * kComputeUnitsPerGpu)) ++fitting_nodes;
      }
      const auto node = index.PickNode(pool, want, demand);
      ASSERT_EQ(node.has_value(), fitting_nodes > 0) << at;
      if (node) {
        EXPECT_GE(index.FullFreeGpus(*node), want) << at;
        EXPECT_TRUE(index.HostFits(*node, demand, want * kComputeUnitsPerGpu)) << at;
      }
      std::vector<int> gang;
      ASSERT_EQ(index.PickGang(pool, 2, want, &gang, demand), fitting_nodes >= 2) << at;
      if (!gang.empty()) {
        ASSERT_EQ(gang.size(), 2u) << at;
        EXPECT_NE(gang[0], gang[1]) << at;
        for (int n : gang) EXPECT_TRUE(index.HostFits(n, demand, want * kComputeUnitsPerGpu)) << at;
      }
    }
  }
}

TEST(CapacityIndex, HostChargeIsTheGpuShareUnlessAsked) {
  CapacityIndex index;
  const int pool = index.AddPool(FindGpuModel("H100-80GB"));
  const int node = index.AddNode(pool, -1, 8);
  const int unknown = index.AddNode(pool, -1, 8);
  index.SetNodeHost(node, 96'000, 768 * 1024);
  // A 1g slice of an 8-GPU node: 1/56 of it; a whole GPU: 1/8.
  EXPECT_EQ(index.HostCharge(node, HostDemand{}, 1).cpu_millis, 96'000 / 56);
  EXPECT_EQ(index.HostCharge(node, HostDemand{}, 7).memory_mib, 768 * 1024 / 8);
  EXPECT_EQ(index.HostCharge(node, HostDemand{5'000, 0}, 7).cpu_millis, 5'000);
  EXPECT_FALSE(index.HostFits(node, HostDemand{96'001, 0}, 1));
  EXPECT_TRUE(index.HostFits(node, HostDemand{96'000, 0}, 1));
  // A node of unknown size is limited by nothing.
  EXPECT_TRUE(index.HostFits(unknown, HostDemand{1'000'000, 1'000'000}, 1));
}

// A GPU in MIG mode offers exactly its instances: a slice lands only on an instance of its
// profile and placement, a whole-GPU job never lands there, and the instances go first
// (taking one fragments nothing).
TEST(Schedule, MigGpuOffersExactlyItsInstances) {
  Snapshot s;
  s.nodes = {Node("n1", 2)};
  s.nodes[0].gpus[0].mig = true;
  s.nodes[0].gpus[0].mig_slices = {{"3g.40gb", 4}, {"2g.20gb", 0}, {"1g.10gb", 2},
                                   {"1g.10gb", 3}, {"2g.20gb", 2} /* overlaps: ignored */,
                                   {"4g.40gb", 5} /* no such placement: ignored */};
  s.market = Market();
  s.jobs = {Spot("w1", 3 * kDollar, JobShape::WholeGpus(1), 1),
            Spot("w2", 1'500'000, JobShape::WholeGpus(1), 2),
            Spot("a3g", 2 * kDollar, JobShape::Slice("3g.40gb"), 3),
            Spot("b2g", 2 * kDollar, JobShape::Slice("2g.20gb"), 4),
            Spot("c2g", 2 * kDollar, JobShape::Slice("2g.20gb"), 5),
            Spot("d1g", 2 * kDollar, JobShape::Slice("1g.10gb"), 6),
            Spot("e1g", 2 * kDollar, JobShape::Slice("1g.10gb"), 7),
            Spot("f1g", 2 * kDollar, JobShape::Slice("1g.10gb"), 8),
            Spot("g4g", 2 * kDollar, JobShape::Slice("4g.40gb"), 9)};
  const Decisions d = Schedule(s);
  auto at = [&](const std::string& id) {
    const Assignment* a = FindAssignment(d, id);
    if (a == nullptr) return std::string("pending: ") + Reason(d, id);
    const NodePlacement& p = a->placements.at(0);
    return absl::StrCat("gpu ", p.gpu_indices.at(0), " ", p.slice_profile, "@", p.slot_start);
  };
  EXPECT_EQ(at("w1"), "gpu 1 7g.80gb@0");
  // Turned away at $2.00 (the slices' bid), so $1.50 is outbid rather than out of room.
  EXPECT_EQ(at("w2"), "pending: outbid: clearing price $2.00/GPU-h > your bid $1.50");
  EXPECT_EQ(at("a3g"), "gpu 0 3g.40gb@4");
  EXPECT_EQ(at("b2g"), "gpu 0 2g.20gb@0");
  EXPECT_EQ(at("c2g"), "pending: no 2g.20gb placement free");
  EXPECT_EQ(at("d1g"), "gpu 0 1g.10gb@2");
  EXPECT_EQ(at("e1g"), "gpu 0 1g.10gb@3");
  EXPECT_EQ(at("f1g"), "pending: no 1g.10gb placement free");
  EXPECT_EQ(at("g4g"), "pending: no 4g.40gb placement free");
}

// Leaving MIG mode (the operator's change) makes the GPU an ordinary one again.
TEST(Schedule, MigGeometryChangeIsANewShape) {
  Snapshot s;
  s.nodes = {Node("n1", 1)};
  s.nodes[0].gpus[0].mig = true;
  s.nodes[0].gpus[0].mig_slices = {{"1g.10gb", 0}};
  s.market = Market();
  IncrementalScheduler engine(s);
  SnapshotDelta add;
  add.upsert_jobs = {Spot("w", 3 * kDollar, JobShape::WholeGpus(1), 1)};
  engine.ApplyDelta(add);
  EXPECT_TRUE(engine.Round(1'000).assignments.empty());
  SnapshotDelta plain;
  plain.upsert_nodes = {Node("n1", 1)};
  engine.ApplyDelta(plain);
  const Decisions d = engine.Round(2'000);
  ASSERT_EQ(d.assignments.size(), 1u);
  EXPECT_EQ(d.assignments[0].job_id, "w");
}

}  // namespace
}  // namespace surplus::scheduler
