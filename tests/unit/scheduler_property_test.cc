// Properties of Schedule() over random fleets and workloads, many seeds each. Every seed is
// printed on failure so a case can be replayed alone.

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "scheduler/incremental.h"
#include "scheduler/scheduler.h"
#include "tests/unit/scheduler_test_util.h"

namespace surplus::scheduler {
namespace {

using namespace surplus::scheduler::testing;  // NOLINT

constexpr int kSeeds = 300;

struct World {
  Snapshot snapshot;
  int64_t next_seq = 1;
  int next_id = 0;
};

const GpuModel& H100() { return *FindGpuModel("H100-80GB"); }

JobShape RandomShape(std::mt19937_64& rng) {
  const int kind = static_cast<int>(rng() % 10);
  if (kind < 5) return JobShape::Slice(H100().profiles[rng() % H100().profiles.size()].name);
  if (kind < 9) return JobShape::WholeGpus(1 << (rng() % 4));
  return JobShape::Gang(2 + static_cast<int>(rng() % 2), 1 << (rng() % 3));
}

JobView RandomPending(World& w, std::mt19937_64& rng) {
  JobView j;
  j.id = "j" + std::to_string(w.next_id++);
  j.tenant_id = "t" + std::to_string(rng() % 4);
  j.tier = rng() % 7 == 0 ? Tier::kOnDemand : Tier::kSpot;
  j.bid = static_cast<Micros>(250'000 * (1 + rng() % 20));  // $0.25 .. $5.00
  j.shape = RandomShape(rng);
  if (rng() % 5 == 0) j.gpu_model = "H100-80GB";
  j.submit_seq = w.next_seq++;
  if (rng() % 2) j.max_runtime_ms = static_cast<int64_t>(10 + rng() % 200) * kMinute;
  // Some ask for host CPU or memory on each node (the rest take their GPU share).
  if (rng() % 3 == 0) j.shape.cpu_millis = static_cast<int64_t>(500 * (1 + rng() % 40));
  if (rng() % 4 == 0) j.shape.memory_mib = static_cast<int64_t>(4096 * (1 + rng() % 32));
  return j;
}

// A fleet with some jobs already running on valid, non-overlapping placements.
World RandomWorld(uint64_t seed) {
  std::mt19937_64 rng(seed);
  World w;
  Snapshot& s = w.snapshot;
  s.now_ms = 1000 * kMinute;
  s.market = Market(/*reserve=*/1 * kDollar, /*list=*/3 * kDollar);
  s.market.min_preempt_gap = (rng() % 2) * 500'000;
  s.market.min_runtime_before_preempt_ms = (rng() % 2) * 10 * kMinute;
  if (rng() % 2) s.market.quotas["t0"] = TenantQuota{static_cast<int>(1 + rng() % 6), 0};
  if (rng() % 2) s.market.quotas["t1"] = TenantQuota{0, static_cast<int>(1 + rng() % 5)};
  const int nodes = 2 + static_cast<int>(rng() % 8);
  const char* fabrics[] = {"A", "B", ""};
  for (int n = 0; n < nodes; ++n) {
    NodeView node = Node("n" + std::to_string(n), 1 << (rng() % 4), fabrics[rng() % 3]);
    node.cordoned = rng() % 20 == 0;
    node.draining = rng() % 20 == 0;
    // Host size: unknown on some nodes, small or large per GPU on others.
    if (rng() % 3 != 0) node.cpu_millis = static_cast<int64_t>(node.gpus.size()) * 1000 * (2 + rng() % 14);
    if (rng() % 3 != 0) node.memory_mib = static_cast<int64_t>(node.gpus.size()) * 8192 * (1 + rng() % 12);
    for (GpuView& g : node.gpus) {
      g.owner_busy = rng() % 10 == 0;
      g.healthy = rng() % 20 != 0;
      g.offerable = rng() % 10 != 0;
      if (rng() % 6 == 0) {
        // In MIG mode with a random geometry: instances tried in random order, kept where
        // they do not overlap (sometimes none).
        g.mig = true;
        uint8_t taken = 0;
        for (int k = static_cast<int>(rng() % 5); k > 0; --k) {
          const SliceProfile& p = H100().profiles[rng() % (H100().profiles.size() - 1)];
          const int start = p.starts[rng() % p.starts.size()];
          if (p.MaskAt(start) & taken) continue;
          taken |= p.MaskAt(start);
          g.mig_slices.emplace_back(p.name, start);
        }
      }
    }
    s.nodes.push_back(node);
  }
  // Running jobs: random shapes at random free valid places (placed where they fit when
  // the fleet was different: they may sit on GPUs that are now busy or unhealthy).
  std::map<std::pair<int, int>, uint8_t> used;
  const int running = static_cast<int>(rng() % (4 * nodes));
  for (int r = 0; r < running; ++r) {
    JobView j = RandomPending(w, rng);
    j.gpu_model.clear();
    const int n = static_cast<int>(rng() % s.nodes.size());
    NodeView& node = s.nodes[n];
    j.running = true;
    j.started_at_ms = s.now_ms - static_cast<int64_t>(rng() % 60) * kMinute;
    j.preempting = rng() % 10 == 0;
    if (j.shape.kind == JobShape::Kind::kSlice) {
      const SliceProfile* p = H100().FindProfile(j.shape.slice_profile);
      const int g = static_cast<int>(rng() % node.gpus.size());
      const int start = p->starts[rng() % p->starts.size()];
      const uint8_t m = p->MaskAt(start);
      if (used[{n, g}] & m) continue;
      used[{n, g}] |= m;
      j.placements.push_back(NodePlacement{node.id, {g}, p->name, start});
    } else {
      j.shape = JobShape::WholeGpus(j.shape.gpus_per_node);
      std::vector<int> gpus;
      for (int g = 0; g < static_cast<int>(node.gpus.size()) &&
                      static_cast<int>(gpus.size()) < j.shape.gpus_per_node;
           ++g) {
        if (used[{n, g}] == 0) gpus.push_back(g);
      }
      if (static_cast<int>(gpus.size()) < j.shape.gpus_per_node) continue;
      for (int g : gpus) used[{n, g}] = 0xFF;
      j.placements.push_back(NodePlacement{node.id, gpus, "7g.80gb", 0});
    }
    s.jobs.push_back(j);
  }
  const int pending = static_cast<int>(rng() % (6 * nodes + 1));
  for (int p = 0; p < pending; ++p) s.jobs.push_back(RandomPending(w, rng));
  return w;
}

// Checks every property of one round's decisions against its snapshot.
void CheckDecisions(const Snapshot& s, const Decisions& d, uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::map<std::string, const NodeView*> nodes;
  for (const NodeView& n : s.nodes) nodes[n.id] = &n;
  std::map<std::string, const JobView*> jobs;
  for (const JobView& j : s.jobs) jobs[j.id] = &j;
  std::map<std::string, Micros> reserve = s.market.reserve_price;

  // Slot occupancy: running jobs first, then each assignment must land on free slots.
  std::map<std::pair<std::string, int>, uint8_t> used;
  auto mark = [&](const std::string& job, const NodePlacement& p, bool fresh) {
    const NodeView& node = *nodes.at(p.node_id);
    const GpuModel& model = *FindGpuModel(node.gpu_model);
    const SliceProfile* prof = model.FindProfile(p.slice_profile);
    ASSERT_NE(prof, nullptr) << job;
    for (int g : p.gpu_indices) {
      ASSERT_GE(g, 0);
      ASSERT_LT(g, static_cast<int>(node.gpus.size()));
      uint8_t m = 0xFF;
      if (!prof->IsWholeGpu()) {
        // Placement table respected: valid start for the profile.
        EXPECT_TRUE(prof->CanStartAt(p.slot_start))
            << job;
        m = prof->MaskAt(p.slot_start);
      }
      uint8_t& u = used[{p.node_id, g}];
      EXPECT_EQ(u & m, 0) << "slot assigned twice: " << job << " on " << p.node_id << "/" << g;
      u |= m;
      if (fresh) {
        const GpuView& gv = node.gpus[g];
        EXPECT_TRUE(gv.healthy && gv.offerable && !gv.owner_busy && !node.cordoned && !node.draining)
            << job << " placed on a GPU that is not offered";
        if (gv.mig) {
          // A MIG GPU gives out its instances only, never itself whole.
          const std::pair<std::string, int> placed{p.slice_profile, p.slot_start};
          EXPECT_FALSE(prof->IsWholeGpu()) << job << " given MIG GPU " << p.node_id << "/" << g << " whole";
          EXPECT_NE(std::find(gv.mig_slices.begin(), gv.mig_slices.end(), placed), gv.mig_slices.end())
              << job << " on " << p.node_id << "/" << g << " at " << p.slice_profile << "@" << p.slot_start
              << ", not one of its MIG instances";
        }
      }
    }
  };
  for (const JobView& j : s.jobs) {
    if (!j.running) continue;
    for (const NodePlacement& p : j.placements) mark(j.id, p, false);
  }
  // Host CPU and memory: a node that gets new work has room for all of it, with what runs
  // there already (a zero request counts as the GPU share of the node).
  std::map<std::string, std::pair<int64_t, int64_t>> host_used;
  std::set<std::string> host_new;
  auto charge = [&](const JobView& j, const NodePlacement& p) {
    const NodeView& n = *nodes.at(p.node_id);
    const SliceProfile* prof = H100().FindProfile(p.slice_profile);
    const int64_t units = prof != nullptr && !prof->IsWholeGpu()
                              ? prof->compute_units
                              : int64_t{kComputeUnitsPerGpu} * static_cast<int64_t>(p.gpu_indices.size());
    const int64_t node_units = int64_t{kComputeUnitsPerGpu} * static_cast<int64_t>(n.gpus.size());
    auto& u = host_used[p.node_id];
    u.first += j.shape.cpu_millis > 0 ? j.shape.cpu_millis : n.cpu_millis * units / node_units;
    u.second += j.shape.memory_mib > 0 ? j.shape.memory_mib : n.memory_mib * units / node_units;
  };
  for (const JobView& j : s.jobs) {
    if (!j.running) continue;
    for (const NodePlacement& p : j.placements) {
      if (nodes.count(p.node_id)) charge(j, p);
    }
  }
  for (const Assignment& a : d.assignments) {
    for (const NodePlacement& p : a.placements) {
      charge(*jobs.at(a.job_id), p);
      host_new.insert(p.node_id);
    }
  }
  for (const std::string& id : host_new) {
    const NodeView& n = *nodes.at(id);
    if (n.cpu_millis > 0) {
      EXPECT_LE(host_used[id].first, n.cpu_millis) << "CPU overcommitted on " << id;
    }
    if (n.memory_mib > 0) {
      EXPECT_LE(host_used[id].second, n.memory_mib) << "memory overcommitted on " << id;
    }
  }

  std::map<std::string, Micros> clearing;
  for (const PoolPrice& p : d.prices) {
    clearing[p.gpu_model] = p.clearing_price;
    EXPECT_GE(p.clearing_price, reserve[p.gpu_model]);  // never below reserve
  }
  std::set<std::string> assigned;
  for (const Assignment& a : d.assignments) {
    const JobView& j = *jobs.at(a.job_id);
    EXPECT_FALSE(j.running);
    assigned.insert(a.job_id);
    for (const NodePlacement& p : a.placements) mark(a.job_id, p, true);
    // Shape honoured; gangs whole: K distinct nodes on one non-empty fabric.
    switch (j.shape.kind) {
      case JobShape::Kind::kSlice:
        ASSERT_EQ(a.placements.size(), 1u);
        EXPECT_EQ(a.placements[0].gpu_indices.size(), 1u);
        EXPECT_EQ(a.placements[0].slice_profile, j.shape.slice_profile);
        break;
      case JobShape::Kind::kWholeGpus:
        ASSERT_EQ(a.placements.size(), 1u);
        EXPECT_EQ(static_cast<int>(a.placements[0].gpu_indices.size()), j.shape.gpus_per_node);
        break;
      case JobShape::Kind::kGang: {
        ASSERT_EQ(static_cast<int>(a.placements.size()), j.shape.nodes) << a.job_id;
        std::set<std::string> distinct;
        for (const NodePlacement& p : a.placements) {
          distinct.insert(p.node_id);
          EXPECT_EQ(static_cast<int>(p.gpu_indices.size()), j.shape.gpus_per_node);
          EXPECT_EQ(nodes.at(p.node_id)->fabric, nodes.at(a.placements[0].node_id)->fabric);
          EXPECT_FALSE(nodes.at(p.node_id)->fabric.empty());
        }
        EXPECT_EQ(static_cast<int>(distinct.size()), j.shape.nodes);
        break;
      }
    }
    // Spot never pays more than its bid; on-demand pays list.
    const std::string& model = nodes.at(a.placements[0].node_id)->gpu_model;
    if (j.tier == Tier::kSpot) {
      EXPECT_LE(a.price, j.bid);
      EXPECT_EQ(a.price, std::min(j.bid, clearing[model]));
    } else {
      EXPECT_EQ(a.price, s.market.list_price.at(model));
    }
  }
  for (const auto& [id, price] : d.running_prices) {
    const JobView& j = *jobs.at(id);
    EXPECT_TRUE(j.running && !j.preempting);
    if (j.tier == Tier::kSpot) {
      EXPECT_LE(price, j.bid) << id;
    }
  }
  // Preemptions: on-demand never by a bid; never a job already leaving.
  std::map<std::string, PreemptCause> preempted;
  for (const Preemption& p : d.preemptions) {
    const JobView& j = *jobs.at(p.job_id);
    EXPECT_TRUE(j.running && !j.preempting) << p.job_id;
    EXPECT_FALSE(p.reason.empty());
    EXPECT_TRUE(preempted.emplace(p.job_id, p.cause).second) << "preempted twice: " << p.job_id;
    if (p.cause == PreemptCause::kOutbid) {
      EXPECT_EQ(j.tier, Tier::kSpot) << p.job_id;
      // Clearing price exceeds its bid by the gap, and it ran long enough.
      const std::string& model = nodes.at(j.placements[0].node_id)->gpu_model;
      EXPECT_GE(clearing[model] - j.bid, s.market.min_preempt_gap) << p.job_id;
      EXPECT_GT(clearing[model], j.bid) << p.job_id;
      EXPECT_GE(s.now_ms - j.started_at_ms, s.market.min_runtime_before_preempt_ms) << p.job_id;
    }
  }
  // GPU quotas: a tenant is given new work only while everything it holds, with that work,
  // stays within its quota (in compute units: 7 to a GPU).
  auto units_of = [&](const std::vector<NodePlacement>& placements) {
    int64_t units = 0;
    for (const NodePlacement& p : placements) {
      const SliceProfile* prof = H100().FindProfile(p.slice_profile);
      units += prof != nullptr && !prof->IsWholeGpu()
                   ? prof->compute_units
                   : int64_t{kComputeUnitsPerGpu} * static_cast<int64_t>(p.gpu_indices.size());
    }
    return units;
  };
  std::map<std::string, int64_t> held, given;
  for (const JobView& j : s.jobs) {
    if (j.running) held[j.tenant_id] += units_of(j.placements);
  }
  for (const Assignment& a : d.assignments) given[jobs.at(a.job_id)->tenant_id] += units_of(a.placements);
  for (const auto& [tenant, quota] : s.market.quotas) {
    if (quota.max_gpus <= 0 || given[tenant] == 0) continue;
    EXPECT_LE(held[tenant] + given[tenant], int64_t{kComputeUnitsPerGpu} * quota.max_gpus)
        << "tenant " << tenant << " over its quota of " << quota.max_gpus << " GPUs";
  }
  // The owner always gets its GPU back: every running job on an owner-busy GPU is told.
  for (const JobView& j : s.jobs) {
    if (!j.running || j.preempting) continue;
    bool on_owner = false;
    for (const NodePlacement& p : j.placements) {
      for (int g : p.gpu_indices) on_owner = on_owner || nodes.at(p.node_id)->gpus[g].owner_busy;
    }
    if (on_owner) {
      ASSERT_TRUE(preempted.count(j.id)) << j.id;
      EXPECT_EQ(preempted[j.id], PreemptCause::kOwnerReclaim) << j.id;
    } else if (preempted.count(j.id) == 0) {
      EXPECT_TRUE(d.running_prices.count(j.id)) << "running job without a price: " << j.id;
    }
  }
  // Every job left pending says why.
  for (const JobView& j : s.jobs) {
    if (j.running || assigned.count(j.id)) continue;
    auto it = d.pending_reasons.find(j.id);
    ASSERT_NE(it, d.pending_reasons.end()) << j.id;
    EXPECT_FALSE(it->second.text.empty());
  }
}

// Applies a round's decisions to the snapshot the way the control plane does.
void Apply(Snapshot& s, const Decisions& d) {
  std::map<std::string, const Assignment*> assigned;
  for (const Assignment& a : d.assignments) assigned[a.job_id] = &a;
  std::set<std::string> preempted;
  for (const Preemption& p : d.preemptions) preempted.insert(p.job_id);
  for (JobView& j : s.jobs) {
    if (auto it = assigned.find(j.id); it != assigned.end()) {
      j.running = true;
      j.started_at_ms = s.now_ms;
      j.placements = it->second->placements;
    }
    if (preempted.count(j.id)) {
      j.preempting = true;
      j.preempt_deadline_ms = s.now_ms + s.market.preempt_notice_ms;
    }
  }
}

// The world moves on 5 minutes: some jobs end, new ones arrive, the owner comes and goes.
// Returns the same change as a delta.
SnapshotDelta MoveOn(World& w, std::mt19937_64& rng) {
  SnapshotDelta delta;
  w.snapshot.now_ms += 5 * kMinute;
  std::vector<JobView> kept;
  for (const JobView& j : w.snapshot.jobs) {
    if ((j.running && rng() % 4 == 0) || j.preempting) {
      delta.remove_jobs.push_back(j.id);
    } else {
      kept.push_back(j);
    }
  }
  w.snapshot.jobs = kept;
  for (int k = static_cast<int>(rng() % 6); k > 0; --k) {
    JobView j = RandomPending(w, rng);
    w.snapshot.jobs.push_back(j);
    delta.upsert_jobs.push_back(j);
  }
  NodeView& node = w.snapshot.nodes[rng() % w.snapshot.nodes.size()];
  GpuView& g = node.gpus[rng() % node.gpus.size()];
  g.owner_busy = !g.owner_busy;
  delta.upsert_nodes.push_back(node);
  return delta;
}

/// The decisions a round acts on (assignments, preemptions, prices, reservations), without
/// the reports.
std::string Decided(Decisions d) {
  d.pending_reasons.clear();
  d.running_prices.clear();
  d.repriced_pools.clear();
  return Fingerprint(d);
}

TEST(ScheduleProperties, InvariantsHoldOnRandomFleets) {
  for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
    World w = RandomWorld(seed);
    const Decisions d = Schedule(w.snapshot);
    CheckDecisions(w.snapshot, d, seed);
    if (::testing::Test::HasFatalFailure()) return;
    // Same snapshot, same decisions.
    EXPECT_EQ(Fingerprint(d), Fingerprint(Schedule(w.snapshot))) << "seed " << seed;
  }
}

TEST(ScheduleProperties, IncrementalMatchesFreshRoundsOverTime) {
  for (uint64_t seed = 1; seed <= kSeeds / 3; ++seed) {
    std::mt19937_64 rng(seed * 7919);
    World w = RandomWorld(seed);
    IncrementalScheduler engine(w.snapshot);
    RoundOptions full;
    full.full_report = true;
    for (int round = 0; round < 4; ++round) {
      const Decisions fresh = Schedule(w.snapshot);
      const Decisions inc = engine.Round(w.snapshot.now_ms, full);
      ASSERT_EQ(Fingerprint(fresh), Fingerprint(inc)) << "seed " << seed << " round " << round;
      CheckDecisions(w.snapshot, fresh, seed);
      Apply(w.snapshot, fresh);
      engine.ApplyDelta(MoveOn(w, rng));
    }
  }
}

// A quote's dry round decides what a fresh round with the candidate decides, and leaves the
// engine deciding exactly as one that never ran it.
TEST(ScheduleProperties, DryRoundsMatchFreshRoundsAndChangeNothing) {
  for (uint64_t seed = 1; seed <= kSeeds / 3; ++seed) {
    std::mt19937_64 rng(seed * 104729);
    World w = RandomWorld(seed);
    IncrementalScheduler quoted(w.snapshot);
    IncrementalScheduler plain(w.snapshot);
    RoundOptions full;
    full.full_report = true;
    for (int round = 0; round < 4; ++round) {
      const int64_t now = w.snapshot.now_ms;
      for (int q = 0; q < 3; ++q) {
        JobView cand = RandomPending(w, rng);
        Snapshot with = w.snapshot;
        with.jobs.push_back(cand);
        const Decisions fresh = Schedule(with);
        const Decisions dry = quoted.DryRound(now, cand);
        EXPECT_EQ(Decided(fresh), Decided(dry)) << "seed " << seed << " round " << round;
        EXPECT_EQ(Reason(fresh, cand.id), Reason(dry, cand.id)) << "seed " << seed << " round " << round;
        EXPECT_EQ(dry.pending_reasons.size(), fresh.pending_reasons.count(cand.id)) << "seed " << seed;
        EXPECT_TRUE(dry.running_prices.empty()) << "seed " << seed;
      }
      EXPECT_EQ(Decided(Schedule(w.snapshot)), Decided(quoted.DryRound(now))) << "seed " << seed;
      const Decisions d = quoted.Round(now, full);
      ASSERT_EQ(Fingerprint(plain.Round(now, full)), Fingerprint(d)) << "seed " << seed << " round " << round;
      // Incremental reports too: the dry rounds did not disturb what was last reported.
      Apply(w.snapshot, d);
      const SnapshotDelta delta = MoveOn(w, rng);
      quoted.ApplyDelta(delta);
      plain.ApplyDelta(delta);
      quoted.DryRound(w.snapshot.now_ms, RandomPending(w, rng));
      const Decisions next = quoted.Round(w.snapshot.now_ms);
      ASSERT_EQ(Fingerprint(plain.Round(w.snapshot.now_ms)), Fingerprint(next))
          << "seed " << seed << " round " << round;
      Apply(w.snapshot, next);  // the world follows the engines
      w.snapshot.now_ms += kMinute;
    }
  }
}

}  // namespace
}  // namespace surplus::scheduler
