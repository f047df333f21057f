// surplus-bench sched: how long one scheduling and market round takes at fleet scale, in
// full (a fresh Schedule() call) and incrementally (IncrementalScheduler with 1% of the
// jobs changing per round), against plain first-fit on the same workload.
// surplus-bench quote: how long a quote takes on the same fleet once it is busy, as a dry
// round on a kept engine, against a fresh engine per quote.

#include <algorithm>
#include <map>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "scheduler/incremental.h"
#include "scheduler/quote.h"
#include "scheduler/scheduler.h"

namespace surplus::bench {
namespace {

using scheduler::Decisions;
using scheduler::IncrementalScheduler;
using scheduler::JobView;
using scheduler::NodeView;
using scheduler::Snapshot;
using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

constexpr int kGpusPerNode = 8;
constexpr int kNodesPerFabric = 32;

// Mixed shapes, weighted like a multi-tenant inference + training queue (per mille):
// slices 600 (1g.10gb 250, 1g.20gb 100, 2g.20gb 120, 3g.40gb 70, 4g.40gb 60),
// whole GPUs 380 (x1 250, x2 70, x4 40, x8 20), gangs 2 x 8 GPUs 20.
JobShape RandomShape(std::mt19937_64& rng) {
  const int r = static_cast<int>(rng() % 1000);
  if (r < 250) return JobShape::Slice("1g.10gb");
  if (r < 350) return JobShape::Slice("1g.20gb");
  if (r < 470) return JobShape::Slice("2g.20gb");
  if (r < 540) return JobShape::Slice("3g.40gb");
  if (r < 600) return JobShape::Slice("4g.40gb");
  if (r < 850) return JobShape::WholeGpus(1);
  if (r < 920) return JobShape::WholeGpus(2);
  if (r < 960) return JobShape::WholeGpus(4);
  if (r < 980) return JobShape::WholeGpus(8);
  return JobShape::Gang(2, 8);
}

// Variants of the workload (the random sequence is the same in all).
struct Workload {
  bool runtimes = true;  ///< half the jobs declare a max runtime (false: none does)
  bool one_gpu = false;  ///< every job takes one whole GPU (else the mix above)
  /// Nodes have 96 CPUs and 768 GiB; a third of the jobs ask for 2-20 CPUs per GPU (at
  /// least 2 per slice) and a sixth for memory. The random sequence stays the same.
  bool host = false;
  /// Nodes have 96 CPUs and 768 GiB, and no job asks for any (each takes its GPU share).
  bool host_sized = false;

  explicit Workload(const Flags& flags)
      : runtimes(!flags.Has("no-runtimes")),
        one_gpu(flags.Has("one-gpu")),
        host(flags.Has("host")),
        host_sized(flags.Has("host-sized")) {}
  std::string Text() const {
    return std::string(one_gpu ? "one whole GPU each" : "mixed shapes") +
           (runtimes ? ", half with a max runtime" : ", no max runtimes") +
           (host ? ", host CPU and memory asked by a third" : "") +
           (host_sized && !host ? ", nodes of 96 CPUs and 768 GiB, jobs take their GPU share" : "");
  }
};

JobView RandomJob(std::mt19937_64& rng, int64_t seq, const Workload& w) {
  JobView j;
  j.id = "job-" + std::to_string(seq);
  j.tenant_id = "tenant-" + std::to_string(rng() % 1000);
  j.tier = rng() % 10 == 0 ? Tier::kOnDemand : Tier::kSpot;
  j.bid = static_cast<Micros>(50'000 * (10 + rng() % 91));  // $0.50 .. $5.00
  const JobShape shape = RandomShape(rng);
  j.shape = w.one_gpu ? JobShape::WholeGpus(1) : shape;
  j.submit_seq = seq;
  if (rng() % 2) {
    const int64_t max_runtime_ms = static_cast<int64_t>(30 + rng() % 211) * 60'000;
    if (w.runtimes) j.max_runtime_ms = max_runtime_ms;
  }
  if (w.host) {
    const uint64_t h = static_cast<uint64_t>(seq) * 0x9E3779B97F4A7C15ULL;
    const int64_t gpus = j.shape.kind == JobShape::Kind::kSlice ? 0 : j.shape.gpus_per_node;
    if (h % 3 == 0) j.shape.cpu_millis = std::max<int64_t>(2, gpus * static_cast<int64_t>(2 + (h >> 8) % 19)) * 1000;
    if (h % 6 == 1) j.shape.memory_mib = std::max<int64_t>(16, gpus * 64) * 1024 * static_cast<int64_t>(1 + (h >> 16) % 2);
  }
  return j;
}

Snapshot BuildSnapshot(int nodes, int jobs, uint64_t seed, const Workload& w) {
  std::mt19937_64 rng(seed);
  Snapshot s;
  s.now_ms = 1'000'000'000;
  s.market.reserve_price["H100-80GB"] = 1'000'000;
  s.market.list_price["H100-80GB"] = 4'000'000;
  s.market.min_preempt_gap = 500'000;
  s.market.min_runtime_before_preempt_ms = 10 * 60'000;
  s.nodes.reserve(static_cast<size_t>(nodes));
  for (int n = 0; n < nodes; ++n) {
    NodeView node;
    char id[32];
    std::snprintf(id, sizeof id, "node-%05d", n);
    node.id = id;
    node.gpu_model = "H100-80GB";
    node.fabric = "fabric-" + std::to_string(n / kNodesPerFabric);
    node.gpus.resize(kGpusPerNode);
    for (int g = 0; g < kGpusPerNode; ++g) node.gpus[g].index = g;
    if (w.host || w.host_sized) {
      node.cpu_millis = 96'000;
      node.memory_mib = 768 * 1024;
    }
    s.nodes.push_back(std::move(node));
  }
  s.jobs.reserve(static_cast<size_t>(jobs));
  for (int j = 0; j < jobs; ++j) s.jobs.push_back(RandomJob(rng, j + 1, w));
  return s;
}

int64_t Units(const JobShape& shape) {
  switch (shape.kind) {
    case JobShape::Kind::kSlice:
      return FindGpuModel("H100-80GB")->FindProfile(shape.slice_profile)->compute_units;
    case JobShape::Kind::kWholeGpus:
      return 7LL * shape.gpus_per_node;
    case JobShape::Kind::kGang:
      return 7LL * shape.gpus_per_node * shape.nodes;
  }
  return 0;
}

struct Result {
  double ms = 0;
  size_t placed = 0;
  int64_t units = 0;
};

// Plain first-fit: admission order as the market's, then the first node / GPU / start that
// fits, found by scanning; no index, no state kept between rounds.
Result PlainFirstFit(const Snapshot& s) {
  const auto t0 = Clock::now();
  const GpuModel& model = *FindGpuModel("H100-80GB");
  std::vector<size_t> order(s.jobs.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const JobView& x = s.jobs[a];
    const JobView& y = s.jobs[b];
    const int tx = x.tier == Tier::kOnDemand ? 0 : 1, ty = y.tier == Tier::kOnDemand ? 0 : 1;
    const Micros bx = tx == 0 ? 0 : -x.bid, by = ty == 0 ? 0 : -y.bid;
    return std::tie(tx, bx, x.submit_seq) < std::tie(ty, by, y.submit_seq);
  });
  const size_t nodes = s.nodes.size();
  std::vector<uint8_t> used(nodes * kGpusPerNode, 0);
  Result r;
  for (size_t idx : order) {
    const JobView& j = s.jobs[idx];
    const Micros reserve = 1'000'000;
    if (j.tier == Tier::kSpot && j.bid < reserve) continue;
    bool ok = false;
    if (j.shape.kind == JobShape::Kind::kSlice && !model.FindProfile(j.shape.slice_profile)->IsWholeGpu()) {
      const SliceProfile& p = *model.FindProfile(j.shape.slice_profile);
      for (size_t g = 0; g < used.size() && !ok; ++g) {
        for (int start : p.starts) {
          const uint8_t m = p.MaskAt(start);
          if ((used[g] & m) == 0) {
            used[g] |= m;
            ok = true;
            break;
          }
        }
      }
    } else {
      const int per_node = j.shape.kind == JobShape::Kind::kSlice ? 1 : j.shape.gpus_per_node;
      const int want_nodes = j.shape.kind == JobShape::Kind::kGang ? j.shape.nodes : 1;
      const size_t span = want_nodes == 1 ? nodes : kNodesPerFabric;
      for (size_t base = 0; base < nodes && !ok; base += span) {
        std::vector<size_t> pick;
        for (size_t n = base; n < std::min(nodes, base + span) && static_cast<int>(pick.size()) < want_nodes; ++n) {
          int free = 0;
          for (int g = 0; g < kGpusPerNode; ++g) free += used[n * kGpusPerNode + g] == 0;
          if (free >= per_node) pick.push_back(n);
        }
        if (static_cast<int>(pick.size()) < want_nodes) continue;
        for (size_t n : pick) {
          int left = per_node;
          for (int g = 0; g < kGpusPerNode && left > 0; ++g) {
            if (used[n * kGpusPerNode + g] == 0) {
              used[n * kGpusPerNode + g] = 0xFF;
              --left;
            }
          }
        }
        ok = true;
      }
    }
    if (ok) {
      ++r.placed;
      r.units += Units(j.shape);
    }
  }
  r.ms = MsSince(t0);
  return r;
}

}  // namespace

int RunSchedBench(int argc, char** argv) {
  Flags flags(argc, argv);
  const int nodes = static_cast<int>(flags.GetInt("nodes", 10'000));
  const int jobs = static_cast<int>(flags.GetInt("jobs", 100'000));
  const int rounds = static_cast<int>(flags.GetInt("rounds", 10));
  const uint64_t seed = static_cast<uint64_t>(flags.GetInt("seed", 1));
  const bool json = flags.Has("json");
  if (!flags.bad().empty() || nodes <= 0 || jobs < 0) {
    std::fprintf(stderr, "usage: surplus-bench sched --nodes N --jobs M [--rounds R] [--seed S] [--no-runtimes] [--one-gpu] [--host | --host-sized] [--json]\n");
    return 2;
  }
  const Workload workload(flags);
  const Snapshot snapshot = BuildSnapshot(nodes, jobs, seed, workload);
  const int64_t capacity_units = 7LL * kGpusPerNode * nodes;

  // Full round: a fresh Schedule() on the whole snapshot (engine build included).
  auto t0 = Clock::now();
  const Decisions full = Schedule(snapshot);
  const double full_ms = MsSince(t0);
  int64_t full_units = 0;
  {
    std::map<std::string, const JobView*> by_id;
    for (const JobView& j : snapshot.jobs) by_id[j.id] = &j;
    for (const auto& a : full.assignments) full_units += Units(by_id[a.job_id]->shape);
  }

  // Incremental: build once, first round, then steady rounds with 1% of jobs changing
  // (half of them running jobs that finish, half new arrivals).
  t0 = Clock::now();
  IncrementalScheduler engine(snapshot);
  const double build_ms = MsSince(t0);
  int64_t now = snapshot.now_ms;
  t0 = Clock::now();
  Decisions first = engine.Round(now);
  const double first_ms = MsSince(t0);
  std::vector<std::string> running;
  for (const auto& a : first.assignments) running.push_back(a.job_id);
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  int64_t next_seq = jobs + 1;
  const int changes = std::max(2, jobs / 100);
  std::vector<double> steady;
  size_t steady_assigned = 0;
  for (int r = 0; r < rounds; ++r) {
    scheduler::SnapshotDelta delta;
    for (int k = 0; k < changes / 2 && !running.empty(); ++k) {
      const size_t i = rng() % running.size();
      delta.remove_jobs.push_back(running[i]);
      running[i] = running.back();
      running.pop_back();
    }
    for (int k = 0; k < changes - changes / 2; ++k) delta.upsert_jobs.push_back(RandomJob(rng, next_seq++, workload));
    now += 10'000;
    t0 = Clock::now();
    engine.ApplyDelta(delta);
    Decisions d = engine.Round(now);
    steady.push_back(MsSince(t0));
    if (flags.Has("verbose")) {
      std::fprintf(stderr, "round %d: %zu started, %zu preempted, %zu prices, %zu reasons, clearing %lld\n", r,
                   d.assignments.size(), d.preemptions.size(), d.running_prices.size(), d.pending_reasons.size(),
                   d.prices.empty() ? 0LL : static_cast<long long>(d.prices[0].clearing_price));
    }
    steady_assigned += d.assignments.size();
    for (const auto& a : d.assignments) running.push_back(a.job_id);
  }
  if (flags.Has("verbose")) {
    for (double ms : steady) std::fprintf(stderr, "steady round: %.2f ms\n", ms);
  }
  std::vector<double> sorted = steady;
  std::sort(sorted.begin(), sorted.end());
  const double steady_median = sorted.empty() ? 0 : sorted[sorted.size() / 2];
  const double steady_max = sorted.empty() ? 0 : sorted.back();

  Result ff;
  if (!flags.Has("no-first-fit")) ff = PlainFirstFit(snapshot);

  const double placements_per_s = full_ms > 0 ? full.assignments.size() / (full_ms / 1000.0) : 0;
  if (json) {
    Json out;
    out.Str("bench", "sched")
        .Str("workload", workload.Text())
        .Int("nodes", nodes)
        .Int("gpus", int64_t{nodes} * kGpusPerNode)
        .Int("jobs", jobs)
        .Int("seed", static_cast<int64_t>(seed))
        .Num("full_round_ms", full_ms)
        .Int("placements", static_cast<int64_t>(full.assignments.size()))
        .Num("placements_per_s", placements_per_s)
        .Num("units_allocated_ratio", static_cast<double>(full_units) / capacity_units)
        .Int("pending_after_round", static_cast<int64_t>(full.pending_reasons.size()))
        .Num("incremental_build_ms", build_ms)
        .Num("incremental_first_round_ms", first_ms)
        .Int("steady_rounds", rounds)
        .Int("steady_changes_per_round", changes)
        .Num("steady_round_ms_median", steady_median)
        .Num("steady_round_ms_max", steady_max)
        .Int("steady_assignments_total", static_cast<int64_t>(steady_assigned))
        .Obj("first_fit", Json()
                              .Num("full_round_ms", ff.ms)
                              .Int("placements", static_cast<int64_t>(ff.placed))
                              .Num("units_allocated_ratio", static_cast<double>(ff.units) / capacity_units));
    std::printf("%s\n", out.str().c_str());
    return 0;
  }
  std::printf("sched: %d nodes x %d H100 = %d GPUs, %d pending jobs: %s (seed %llu)\n\n", nodes,
              kGpusPerNode, nodes * kGpusPerNode, jobs, workload.Text().c_str(), static_cast<unsigned long long>(seed));
  PrintTable({
      {"policy", "round", "time ms", "placements", "placements/s", "GPU units allocated"},
      {"surplus", "full (Schedule)", Fmt(full_ms, 1), std::to_string(full.assignments.size()),
       Fmt(placements_per_s, 0), Fmt(100.0 * full_units / capacity_units, 1) + "%"},
      {"surplus", "incremental build", Fmt(build_ms, 1), "", "", ""},
      {"surplus", "incremental first", Fmt(first_ms, 1), std::to_string(first.assignments.size()), "", ""},
      {"surplus", "steady median (1%)", Fmt(steady_median, 2),
       std::to_string(steady_assigned / std::max(1, rounds)), "", ""},
      {"surplus", "steady max (1%)", Fmt(steady_max, 2), "", "", ""},
      {"first-fit", "full (scan)", Fmt(ff.ms, 1), std::to_string(ff.placed),
       Fmt(ff.ms > 0 ? ff.placed / (ff.ms / 1000.0) : 0, 0), Fmt(100.0 * ff.units / capacity_units, 1) + "%"},
  });
  std::printf("\nsteady rounds: %d, %d job changes each (%d finish, %d arrive)\n", rounds, changes,
              changes / 2, changes - changes / 2);
  std::printf("targets: full round < 1000 ms: %s; steady round < 50 ms: %s\n",
              full_ms < 1000 ? "met" : "MISSED", steady_max < 50 ? "met" : "MISSED");
  return 0;
}

int RunQuoteBench(int argc, char** argv) {
  Flags flags(argc, argv);
  const int nodes = static_cast<int>(flags.GetInt("nodes", 10'000));
  const int jobs = static_cast<int>(flags.GetInt("jobs", 100'000));
  const int quotes = static_cast<int>(flags.GetInt("quotes", 50));
  const int fresh_quotes = static_cast<int>(flags.GetInt("fresh-quotes", 3));
  const uint64_t seed = static_cast<uint64_t>(flags.GetInt("seed", 1));
  const bool json = flags.Has("json");
  if (!flags.bad().empty() || nodes <= 0 || jobs < 0 || quotes <= 0 || fresh_quotes < 0) {
    std::fprintf(stderr,
                 "usage: surplus-bench quote --nodes N --jobs M [--quotes Q] [--fresh-quotes F] [--seed S] "
                 "[--no-runtimes] [--one-gpu] [--json]\n");
    return 2;
  }
  // A busy fleet: a full round's jobs running (long enough to be outbid), the rest pending,
  // then 5% of the running jobs ended, leaving holes.
  const Workload workload(flags);
  Snapshot state = BuildSnapshot(nodes, jobs, seed, workload);
  {
    const Decisions d = Schedule(state);
    std::map<std::string, const scheduler::Assignment*> assigned;
    for (const auto& a : d.assignments) assigned[a.job_id] = &a;
    std::mt19937_64 ended(seed);
    std::vector<JobView> kept;
    for (JobView& j : state.jobs) {
      auto it = assigned.find(j.id);
      if (it != assigned.end()) {
        if (ended() % 20 == 0) continue;
        j.running = true;
        j.started_at_ms = state.now_ms - 20 * 60'000;
        j.placements = it->second->placements;
      }
      kept.push_back(std::move(j));
    }
    state.jobs = std::move(kept);
    state.now_ms += 10'000;
  }
  const size_t running = static_cast<size_t>(std::count_if(state.jobs.begin(), state.jobs.end(),
                                                           [](const JobView& j) { return j.running; }));
  const int64_t now = state.now_ms;

  auto t0 = Clock::now();
  IncrementalScheduler engine(state);
  const double load_ms = MsSince(t0);
  t0 = Clock::now();
  const scheduler::QuoteBaseline baseline = scheduler::BaselineOf(engine, now);
  const double first_baseline_ms = MsSince(t0);
  t0 = Clock::now();
  scheduler::BaselineOf(engine, now);
  const double baseline_ms = MsSince(t0);

  std::mt19937_64 rng(seed ^ 0x51ed270b27a5f1c3ULL);
  int64_t seq = jobs + 1;
  std::vector<double> times;
  int would_start = 0;
  for (int q = 0; q < quotes; ++q) {
    const JobView cand = RandomJob(rng, seq++, workload);
    t0 = Clock::now();
    const scheduler::Quote quote = scheduler::QuoteJob(engine, now, cand, baseline);
    times.push_back(MsSince(t0));
    would_start += quote.would_start_now ? 1 : 0;
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double p99 = times[std::min(times.size() - 1, times.size() * 99 / 100)];

  // The previous design, per quote: a fresh engine on the snapshot with the candidate, one
  // full round (the baseline cached, the database read not counted). Its answers must agree.
  std::vector<double> fresh_times;
  int agree = 0;
  for (int q = 0; q < fresh_quotes; ++q) {
    JobView cand = RandomJob(rng, seq++, workload);
    Snapshot with = state;
    with.jobs.push_back(cand);
    t0 = Clock::now();
    const Decisions d = Schedule(with);
    fresh_times.push_back(MsSince(t0));
    const scheduler::Quote quote = scheduler::QuoteJob(engine, now, cand, baseline);
    const scheduler::Assignment* a = nullptr;
    for (const auto& x : d.assignments) {
      if (x.job_id == cand.id) a = &x;
    }
    if ((a != nullptr) == quote.would_start_now && (a == nullptr || a->price == quote.price)) ++agree;
  }
  std::sort(fresh_times.begin(), fresh_times.end());
  const double fresh_median = fresh_times.empty() ? 0 : fresh_times[fresh_times.size() / 2];

  if (json) {
    Json out;
    out.Str("bench", "quote")
        .Str("workload", workload.Text())
        .Int("nodes", nodes)
        .Int("jobs", jobs)
        .Int("running_jobs", static_cast<int64_t>(running))
        .Int("pending_jobs", static_cast<int64_t>(engine.pending_jobs()))
        .Int("seed", static_cast<int64_t>(seed))
        .Num("mirror_load_ms", load_ms)
        .Num("baseline_first_ms", first_baseline_ms)
        .Num("baseline_ms", baseline_ms)
        .Int("quotes", quotes)
        .Num("quote_ms_median", median)
        .Num("quote_ms_p99", p99)
        .Num("quote_ms_max", times.back())
        .Int("would_start", would_start)
        .Obj("fresh_engine", Json()
                                 .Int("quotes", fresh_quotes)
                                 .Num("quote_ms_median", fresh_median)
                                 .Int("answers_agree", agree));
    std::printf("%s\n", out.str().c_str());
    return 0;
  }
  std::printf("quote: %d nodes x %d H100, %zu jobs running, %zu pending: %s (seed %llu)\n\n", nodes,
              kGpusPerNode, running, engine.pending_jobs(), workload.Text().c_str(),
              static_cast<unsigned long long>(seed));
  PrintTable({
      {"step", "time ms", "count"},
      {"mirror load (engine build, once)", Fmt(load_ms, 1), "1"},
      {"baseline dry round (first)", Fmt(first_baseline_ms, 1), "1"},
      {"baseline dry round (then)", Fmt(baseline_ms, 1), "1"},
      {"quote: dry round, median", Fmt(median, 2), std::to_string(quotes)},
      {"quote: dry round, p99", Fmt(p99, 2), ""},
      {"quote: dry round, max", Fmt(times.back(), 2), ""},
      {"quote: fresh engine, median", Fmt(fresh_median, 1), std::to_string(fresh_quotes)},
  });
  std::printf("\n%d of %d quotes would start now; fresh-engine answers agree: %d of %d\n", would_start, quotes,
              agree, fresh_quotes);
  return 0;
}

}  // namespace surplus::bench
