// surplus-bench harvest: replays the trace with the fleet's own pods (qos LS, Guaranteed,
// Burstable) as owner load and BE pods as tenant jobs. The owner places its pods as if
// tenants did not exist (first fit by GPU share); a GPU with any owner load is owner-busy.
// The HarvestTracker turns that into offerable / owner_busy, the scheduler sells the rest.
// Reports the share of owner-idle GPU time sold to tenants, and the time from the owner's
// demand for a GPU to the GPU being free of tenant work (bounded by the notice period).

#include <algorithm>
#include <cstdio>
#include <map>
#include <queue>
#include <set>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "bench/trace.h"
#include "scheduler/harvest.h"
#include "scheduler/incremental.h"

namespace surplus::bench {
namespace {

using scheduler::GpuRef;
using scheduler::HarvestConfig;
using scheduler::HarvestTracker;
using scheduler::IncrementalScheduler;
using scheduler::JobView;
using scheduler::NodeView;
using scheduler::SnapshotDelta;

enum class Ev { kOwnerEnd, kTenantEnd, kOwnerStart, kTenantSubmit, kTick };

struct Event {
  int64_t t;
  Ev kind;
  int id;  // owner pod / tenant job index
  int64_t gen;
  bool operator>(const Event& o) const {
    return std::tie(t, kind, id) > std::tie(o.t, o.kind, o.id);
  }
};

int64_t Percentile(std::vector<int64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int RunHarvestBench(int argc, char** argv) {
  Flags flags(argc, argv);
  const std::string nodes_path = flags.Get("nodes", "");
  const std::string pods_path = flags.Get("pods", "");
  const int64_t window_ms = flags.GetInt("window-s", 300) * 1000;
  const int64_t notice_ms = flags.GetInt("notice-s", 120) * 1000;
  const bool json = flags.Has("json");
  // --saturate: tenants always want more: every BE pod is submitted at the start in
  // `copies` copies and resubmitted when it ends, so the share sold measures harvesting,
  // not how much the trace's BE pods happened to ask for.
  const bool saturate = flags.Has("saturate");
  const int copies = static_cast<int>(flags.GetInt("copies", 1));
  if (nodes_path.empty() || pods_path.empty() || !flags.bad().empty() || copies < 1) {
    std::fprintf(stderr,
                 "usage: surplus-bench harvest --nodes NODES.csv --pods PODS.csv [--window-s S] "
                 "[--notice-s S] [--saturate [--copies K]] [--start-s S] [--hours H] [--json]\n");
    return 2;
  }
  auto nodes = ReadTraceNodes(nodes_path);
  bool has_times = false, has_qos = false;
  auto pods = nodes.ok() ? ReadTracePods(pods_path, &has_times, &has_qos) : nodes.status();
  if (!nodes.ok() || !pods.ok()) {
    std::fprintf(stderr, "%s\n", (!nodes.ok() ? nodes.status() : pods.status()).ToString().c_str());
    return 1;
  }
  if (!has_times || !has_qos) {
    std::fprintf(stderr, "%s: harvest needs qos, creation_time and deletion_time columns\n", pods_path.c_str());
    return 1;
  }

  // Fleet: one NodeView per GPU node; global GPU ids in node order.
  std::vector<NodeView> views;
  std::vector<int> first_gpu;
  std::vector<std::pair<int, int>> gpu_at;  // global gpu -> (node, index)
  for (const TraceNode& n : *nodes) {
    if (n.gpus <= 0) continue;
    NodeView v;
    v.id = n.name;
    v.gpu_model = "H100-80GB";
    first_gpu.push_back(static_cast<int>(gpu_at.size()));
    for (int g = 0; g < n.gpus; ++g) {
      scheduler::GpuView gv;
      gv.index = g;
      v.gpus.push_back(gv);
      gpu_at.push_back({static_cast<int>(views.size()), g});
    }
    views.push_back(std::move(v));
  }
  std::map<std::string, int> node_index;
  for (size_t i = 0; i < views.size(); ++i) node_index[views[i].id] = static_cast<int>(i);
  const int gpus = static_cast<int>(gpu_at.size());

  // Split the trace.
  struct Owner {
    const TracePod* pod;
    std::vector<std::pair<int, int>> on;  // gpu, milli
  };
  struct Tenant {
    JobView view;
    int64_t remaining_ms = 0;
    int64_t started_ms = -1;
    int64_t gen = 0;
    std::vector<int> gpus;
    int64_t units = 0;
  };
  std::vector<Owner> owners;
  std::vector<Tenant> tenants;
  // Measured span: the whole trace by default; with --saturate (or --hours) a window of
  // `hours` from --start-s, by default where the busiest part of the trace begins (the 5th
  // percentile of pod creation times).
  int64_t t_begin = INT64_MAX, t_end = 0;
  std::vector<int64_t> created;
  for (const TracePod& p : *pods) {
    if (p.num_gpu <= 0 || p.deletion_s <= p.creation_s) continue;
    t_begin = std::min(t_begin, p.creation_s * 1000);
    t_end = std::max(t_end, p.deletion_s * 1000);
    created.push_back(p.creation_s * 1000);
  }
  if (saturate || flags.Has("hours") || flags.Has("start-s")) {
    std::sort(created.begin(), created.end());
    t_begin = flags.Has("start-s") ? flags.GetInt("start-s", 0) * 1000
                                   : (created.empty() ? 0 : created[created.size() / 20]);
    t_end = t_begin + flags.GetInt("hours", 24) * 3'600'000;
  }
  std::vector<TracePod> clipped;
  for (const TracePod& p : *pods) {
    if (p.num_gpu <= 0 || p.deletion_s <= p.creation_s) continue;
    if (p.deletion_s * 1000 <= t_begin || p.creation_s * 1000 >= t_end) continue;
    TracePod c = p;
    // Pods alive when the span starts begin with it.
    if (c.creation_s * 1000 < t_begin) c.creation_s = (t_begin + 999) / 1000;
    if (c.deletion_s <= c.creation_s) continue;
    clipped.push_back(std::move(c));
  }
  t_begin = (t_begin + 999) / 1000 * 1000;
  for (const TracePod& p : clipped) {
    if (p.qos == "BE") {
      for (int c = 0; c < (saturate ? copies : 1); ++c) {
        Tenant t;
        if (!PodShape(p, &t.view.shape, &t.units)) continue;
        t.view.id = c == 0 ? p.name : p.name + "#" + std::to_string(c);
        t.view.tenant_id = "be";
        t.view.bid = 2'000'000;
        t.view.submit_seq = static_cast<int64_t>(tenants.size()) + 1;
        t.remaining_ms = (p.deletion_s - p.creation_s) * 1000;
        t.view.max_runtime_ms = t.remaining_ms;
        tenants.push_back(std::move(t));
      }
    } else {
      owners.push_back(Owner{&p, {}});
    }
  }

  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events;
  for (size_t i = 0; i < owners.size(); ++i) {
    events.push({owners[i].pod->creation_s * 1000, Ev::kOwnerStart, static_cast<int>(i), 0});
  }
  std::vector<int64_t> duration(tenants.size());
  {
    size_t k = 0;
    for (const TracePod& p : clipped) {
      if (p.qos != "BE") continue;
      JobShape s;
      int64_t u;
      if (!PodShape(p, &s, &u)) continue;
      for (int c = 0; c < (saturate ? copies : 1); ++c, ++k) {
        duration[k] = tenants[k].remaining_ms;
        events.push({saturate ? t_begin : p.creation_s * 1000, Ev::kTenantSubmit, static_cast<int>(k), 0});
      }
    }
  }
  int64_t next_seq = static_cast<int64_t>(tenants.size()) + 1;

  HarvestTracker tracker(HarvestConfig{window_ms});
  for (int g = 0; g < gpus; ++g) {
    tracker.Observe({GpuRef{views[gpu_at[g].first].id, gpu_at[g].second}, false, t_begin});
    events.push({t_begin + window_ms, Ev::kTick, g, 0});
  }
  IncrementalScheduler engine;
  {
    SnapshotDelta d;
    scheduler::MarketConfig m;
    m.reserve_price["H100-80GB"] = 1'000'000;
    m.preempt_notice_ms = notice_ms;
    d.market = m;
    std::vector<NodeView> init = views;
    tracker.Apply(t_begin, &init);
    d.upsert_nodes = init;
    engine.ApplyDelta(d);
  }
  // Whether each GPU is offered to tenants, as the engine last saw it.
  std::vector<char> offered(static_cast<size_t>(gpus), 0);
  auto note_offered = [&](int n, const NodeView& v) {
    for (size_t i = 0; i < v.gpus.size(); ++i) {
      offered[first_gpu[n] + static_cast<int>(i)] = v.gpus[i].offerable && !v.gpus[i].owner_busy;
    }
  };

  std::vector<int> owner_milli(static_cast<size_t>(gpus), 0);
  std::vector<std::set<int>> tenants_on(static_cast<size_t>(gpus));
  std::vector<int64_t> demand_at(static_cast<size_t>(gpus), -1);
  std::vector<int64_t> latencies;
  std::map<std::string, int> tenant_by_id;
  for (size_t i = 0; i < tenants.size(); ++i) tenant_by_id[tenants[i].view.id] = static_cast<int>(i);
  for (size_t n = 0; n < views.size(); ++n) {
    std::vector<NodeView> one = {views[n]};
    tracker.Apply(t_begin, &one);
    note_offered(static_cast<int>(n), one[0]);
  }
  int64_t owner_dropped = 0, preempted = 0, rounds = 0;
  double idle_gpu_ms = 0, sold_gpu_ms = 0;
  // Where the owner-idle GPU time that was not sold went, in compute units now (rates) and
  // in GPU-milliseconds (integrated over time like idle_gpu_ms).
  struct Unsold {
    int64_t window = 0;   // GPUs still inside the idle window (not offered yet)
    int64_t empty = 0;    // offered GPUs no tenant job runs on
    int64_t partial = 0;  // free units of offered GPUs that tenant slices share
  } unsold_rate;
  double window_gpu_ms = 0, empty_gpu_ms = 0, partial_gpu_ms = 0;
  auto recount = [&] {
    unsold_rate = Unsold{};
    for (int g = 0; g < gpus; ++g) {
      if (owner_milli[g] != 0) continue;
      int64_t sold = 0;
      for (int k : tenants_on[g]) sold += tenants[k].units / static_cast<int64_t>(tenants[k].gpus.size());
      const int64_t free = std::max<int64_t>(0, kComputeUnitsPerGpu - sold);
      if (!offered[g]) {
        unsold_rate.window += free;
      } else if (tenants_on[g].empty()) {
        unsold_rate.empty += free;
      } else {
        unsold_rate.partial += free;
      }
    }
  };
  int64_t idle_gpus = gpus;  // GPUs with no owner load
  int64_t sold_units_on_idle = 0;
  int64_t last_t = t_begin;
  std::set<int> dirty_nodes;

  auto stop_tenant = [&](int k, int64_t t) {
    Tenant& tj = tenants[k];
    for (int g : tj.gpus) {
      tenants_on[g].erase(k);
      if (owner_milli[g] == 0) sold_units_on_idle -= tj.units / static_cast<int64_t>(tj.gpus.size());
      if (tenants_on[g].empty() && demand_at[g] >= 0) {
        latencies.push_back(t - demand_at[g]);
        demand_at[g] = -1;
      }
    }
    tj.gpus.clear();
  };

  while (!events.empty()) {
    const int64_t t = events.top().t;
    if (t > t_end) break;
    const double dt = static_cast<double>(t - last_t);
    idle_gpu_ms += dt * static_cast<double>(idle_gpus);
    sold_gpu_ms += dt * static_cast<double>(sold_units_on_idle) / kComputeUnitsPerGpu;
    window_gpu_ms += dt * static_cast<double>(unsold_rate.window) / kComputeUnitsPerGpu;
    empty_gpu_ms += dt * static_cast<double>(unsold_rate.empty) / kComputeUnitsPerGpu;
    partial_gpu_ms += dt * static_cast<double>(unsold_rate.partial) / kComputeUnitsPerGpu;
    last_t = t;
    SnapshotDelta delta;
    bool changed = false;
    while (!events.empty() && events.top().t == t) {
      const Event e = events.top();
      events.pop();
      switch (e.kind) {
        case Ev::kOwnerStart: {
          Owner& o = owners[e.id];
          const int need = o.pod->num_gpu, milli = o.pod->num_gpu > 1 ? 1000 : o.pod->gpu_milli;
          // The owner's own first fit: N GPUs of one node with room for `milli` each.
          for (size_t n = 0; n < views.size() && o.on.empty(); ++n) {
            std::vector<int> fit;
            for (size_t g = 0; g < views[n].gpus.size() && static_cast<int>(fit.size()) < need; ++g) {
              const int gg = first_gpu[n] + static_cast<int>(g);
              if (owner_milli[gg] + milli <= 1000) fit.push_back(gg);
            }
            if (static_cast<int>(fit.size()) < need) continue;
            for (int gg : fit) o.on.push_back({gg, milli});
          }
          if (o.on.empty()) {
            ++owner_dropped;
            break;
          }
          for (const auto& [gg, m] : o.on) {
            if (owner_milli[gg] == 0) {
              --idle_gpus;
              for (int k : tenants_on[gg]) sold_units_on_idle -= tenants[k].units / static_cast<int64_t>(tenants[k].gpus.size());
              tracker.Observe({GpuRef{views[gpu_at[gg].first].id, gpu_at[gg].second}, true, t});
              dirty_nodes.insert(gpu_at[gg].first);
              if (!tenants_on[gg].empty() && demand_at[gg] < 0) demand_at[gg] = t;
            }
            owner_milli[gg] += m;
          }
          events.push({o.pod->deletion_s * 1000, Ev::kOwnerEnd, e.id, 0});
          break;
        }
        case Ev::kOwnerEnd: {
          for (const auto& [gg, m] : owners[e.id].on) {
            owner_milli[gg] -= m;
            if (owner_milli[gg] == 0) {
              ++idle_gpus;
              for (int k : tenants_on[gg]) sold_units_on_idle += tenants[k].units / static_cast<int64_t>(tenants[k].gpus.size());
              tracker.Observe({GpuRef{views[gpu_at[gg].first].id, gpu_at[gg].second}, false, t});
              dirty_nodes.insert(gpu_at[gg].first);
              events.push({t + window_ms, Ev::kTick, gg, 0});
            }
          }
          break;
        }
        case Ev::kTenantSubmit: {
          Tenant& tj = tenants[e.id];
          JobView v = tj.view;
          v.running = false;
          v.max_runtime_ms = tj.remaining_ms;
          delta.upsert_jobs.push_back(v);
          changed = true;
          break;
        }
        case Ev::kTenantEnd: {
          Tenant& tj = tenants[e.id];
          if (e.gen != tj.gen || tj.started_ms < 0) break;  // superseded
          const bool finished = t >= tj.started_ms + tj.remaining_ms;
          tj.remaining_ms = std::max<int64_t>(0, tj.remaining_ms - (t - tj.started_ms));
          tj.started_ms = -1;
          ++tj.gen;
          stop_tenant(e.id, t);
          delta.remove_jobs.push_back(tj.view.id);
          if (finished && saturate) {
            // Demand never runs out: the same work is submitted again.
            tj.remaining_ms = duration[e.id];
            JobView v = tj.view;
            v.max_runtime_ms = tj.remaining_ms;
            v.submit_seq = next_seq++;
            tj.view.submit_seq = v.submit_seq;
            delta.upsert_jobs.push_back(v);
          } else if (!finished && tj.remaining_ms > 0) {
            // Preempted before its end: requeued with what is left.
            JobView v = tj.view;
            v.max_runtime_ms = tj.remaining_ms;
            v.submit_seq = tj.view.submit_seq;
            delta.upsert_jobs.push_back(v);
          }
          changed = true;
          break;
        }
        case Ev::kTick:
          dirty_nodes.insert(gpu_at[e.id].first);
          break;
      }
    }
    if (!dirty_nodes.empty()) {
      for (int n : dirty_nodes) {
        std::vector<NodeView> one = {views[n]};
        tracker.Apply(t, &one);
        note_offered(n, one[0]);
        delta.upsert_nodes.push_back(one[0]);
      }
      dirty_nodes.clear();
      changed = true;
    }
    if (!changed) {
      recount();
      continue;
    }
    engine.ApplyDelta(delta);
    const scheduler::Decisions d = engine.Round(t);
    ++rounds;
    for (const auto& a : d.assignments) {
      const int k = tenant_by_id[a.job_id];
      Tenant& tj = tenants[k];
      tj.started_ms = t;
      ++tj.gen;
      for (const auto& p : a.placements) {
        for (int g : p.gpu_indices) tj.gpus.push_back(first_gpu[node_index[p.node_id]] + g);
      }
      for (int g : tj.gpus) {
        tenants_on[g].insert(k);
        if (owner_milli[g] == 0) sold_units_on_idle += tj.units / static_cast<int64_t>(tj.gpus.size());
      }
      events.push({t + tj.remaining_ms, Ev::kTenantEnd, k, tj.gen});
    }
    for (const auto& p : d.preemptions) {
      const int k = tenant_by_id[p.job_id];
      ++preempted;
      // Stopped at the notice deadline unless it ends before.
      const Tenant& tj = tenants[k];
      if (tj.started_ms >= 0 && t + notice_ms < tj.started_ms + tj.remaining_ms) {
        events.push({t + notice_ms, Ev::kTenantEnd, k, tj.gen});
      }
    }
    recount();
  }
  const double share = idle_gpu_ms > 0 ? sold_gpu_ms / idle_gpu_ms : 0;
  auto of_idle = [&](double ms) { return idle_gpu_ms > 0 ? ms / idle_gpu_ms : 0; };
  const int64_t p50 = Percentile(latencies, 0.5), p99 = Percentile(latencies, 0.99);
  const int64_t max_lat = latencies.empty() ? 0 : *std::max_element(latencies.begin(), latencies.end());
  const bool within = max_lat <= notice_ms;
  const double hours = static_cast<double>(t_end - t_begin) / 3.6e6;
  if (json) {
    Json out;
    out.Str("bench", "harvest")
        .Str("pods_file", pods_path)
        .Int("gpus", gpus)
        .Int("owner_pods", static_cast<int64_t>(owners.size()))
        .Int("tenant_jobs", static_cast<int64_t>(tenants.size()))
        .Num("trace_hours", hours)
        .Raw("saturate", saturate ? "true" : "false")
        .Int("copies", saturate ? copies : 1)
        .Int("idle_window_s", window_ms / 1000)
        .Int("notice_s", notice_ms / 1000)
        .Num("owner_idle_gpu_hours", idle_gpu_ms / 3.6e6)
        .Num("sold_gpu_hours", sold_gpu_ms / 3.6e6)
        .Num("sold_share_of_owner_idle", share)
        .Num("unsold_in_idle_window_share", of_idle(window_gpu_ms))
        .Num("unsold_offered_empty_share", of_idle(empty_gpu_ms))
        .Num("unsold_offered_beside_slices_share", of_idle(partial_gpu_ms))
        .Int("reclaims", static_cast<int64_t>(latencies.size()))
        .Int("preemptions", preempted)
        .Num("reclaim_to_free_p50_s", p50 / 1000.0)
        .Num("reclaim_to_free_p99_s", p99 / 1000.0)
        .Num("reclaim_to_free_max_s", max_lat / 1000.0)
        .Raw("within_notice", within ? "true" : "false")
        .Int("owner_pods_not_placed", owner_dropped)
        .Int("rounds", rounds);
    std::printf("%s\n", out.str().c_str());
    return 0;
  }
  std::printf("harvest: %s, %d GPUs (as H100-80GB), %.0f h of trace\n", pods_path.c_str(), gpus, hours);
  std::printf("owner pods (LS/Guaranteed/Burstable): %zu (%lld found no room), tenant jobs (BE): %zu\n",
              owners.size(), static_cast<long long>(owner_dropped), tenants.size());
  std::printf("idle window %lld s, notice %lld s, %lld scheduling rounds\n\n", static_cast<long long>(window_ms / 1000),
              static_cast<long long>(notice_ms / 1000), static_cast<long long>(rounds));
  PrintTable({
      {"metric", "value"},
      {"owner-idle GPU-hours", Fmt(idle_gpu_ms / 3.6e6, 0)},
      {"sold to tenants, GPU-hours", Fmt(sold_gpu_ms / 3.6e6, 0)},
      {"share of owner-idle time sold", Fmt(100 * share, 1) + "%"},
      {"  unsold: inside the idle window", Fmt(100 * of_idle(window_gpu_ms), 1) + "%"},
      {"  unsold: offered, no tenant job on the GPU", Fmt(100 * of_idle(empty_gpu_ms), 1) + "%"},
      {"  unsold: offered, free units beside tenant slices", Fmt(100 * of_idle(partial_gpu_ms), 1) + "%"},
      {"owner reclaims of tenant GPUs", std::to_string(latencies.size())},
      {"tenant preemptions", std::to_string(preempted)},
      {"reclaim -> GPU free p50", Fmt(p50 / 1000.0, 1) + " s"},
      {"reclaim -> GPU free p99", Fmt(p99 / 1000.0, 1) + " s"},
      {"reclaim -> GPU free max", Fmt(max_lat / 1000.0, 1) + " s"},
  });
  std::printf("\nall reclaims within the %lld s notice: %s\n", static_cast<long long>(notice_ms / 1000),
              within ? "yes" : "NO");
  return 0;
}

}  // namespace surplus::bench
