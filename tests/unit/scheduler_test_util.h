#pragma once
// Builders for scheduler tests: small fleets and jobs in one line each.

#include <string>
#include <vector>

#include "scheduler/scheduler.h"

namespace surplus::scheduler::testing {

inline constexpr Micros kDollar = kMicrosPerDollar;
inline constexpr int64_t kMinute = 60'000;

inline NodeView Node(std::string id, int gpus, std::string fabric = "",
                     std::string model = "H100-80GB") {
  NodeView n;
  n.id = std::move(id);
  n.gpu_model = std::move(model);
  n.fabric = std::move(fabric);
  for (int i = 0; i < gpus; ++i) {
    GpuView g;
    g.index = i;
    n.gpus.push_back(g);
  }
  return n;
}

inline JobView Spot(std::string id, Micros bid, JobShape shape, int64_t seq,
                    std::string tenant = "t") {
  JobView j;
  j.id = std::move(id);
  j.tenant_id = std::move(tenant);
  j.tier = Tier::kSpot;
  j.bid = bid;
  j.shape = std::move(shape);
  j.submit_seq = seq;
  return j;
}

inline JobView OnDemand(std::string id, JobShape shape, int64_t seq, std::string tenant = "t") {
  JobView j = Spot(std::move(id), 0, std::move(shape), seq, std::move(tenant));
  j.tier = Tier::kOnDemand;
  return j;
}

/// Marks `job` running since `started_at_ms` on whole GPUs `gpus` of `node`.
inline JobView RunningWhole(JobView job, const std::string& node, std::vector<int> gpus,
                            int64_t started_at_ms) {
  job.running = true;
  job.started_at_ms = started_at_ms;
  NodePlacement p;
  p.node_id = node;
  p.gpu_indices = std::move(gpus);
  p.slice_profile = "7g.80gb";
  job.placements.push_back(p);
  return job;
}

/// Marks `job` (a slice job) running since `started_at_ms` at `start` on one GPU.
inline JobView RunningSlice(JobView job, const std::string& node, int gpu, int start,
                            int64_t started_at_ms) {
  job.running = true;
  job.started_at_ms = started_at_ms;
  NodePlacement p;
  p.node_id = node;
  p.gpu_indices = {gpu};
  p.slice_profile = job.shape.slice_profile;
  p.slot_start = start;
  job.placements.push_back(p);
  return job;
}

inline MarketConfig Market(Micros reserve = 1 * kDollar, Micros list = 4 * kDollar) {
  MarketConfig m;
  m.reserve_price["H100-80GB"] = reserve;
  m.list_price["H100-80GB"] = list;
  return m;
}

inline const Assignment* FindAssignment(const Decisions& d, const std::string& job) {
  for (const Assignment& a : d.assignments) {
    if (a.job_id == job) return &a;
  }
  return nullptr;
}

inline const Preemption* FindPreemption(const Decisions& d, const std::string& job) {
  for (const Preemption& p : d.preemptions) {
    if (p.job_id == job) return &p;
  }
  return nullptr;
}

inline Micros ClearingPrice(const Decisions& d, const std::string& model = "H100-80GB") {
  for (const PoolPrice& p : d.prices) {
    if (p.gpu_model == model) return p.clearing_price;
  }
  return -1;
}

inline std::string Reason(const Decisions& d, const std::string& job) {
  auto it = d.pending_reasons.find(job);
  return it == d.pending_reasons.end() ? std::string() : it->second.text;
}

/// Every decision as text, in a fixed order: equal fingerprints mean equal decisions.
inline std::string Fingerprint(const Decisions& d) {
  std::string out;
  for (const Assignment& a : d.assignments) {
    out += "A " + a.job_id + " " + std::to_string(a.price);
    for (const NodePlacement& p : a.placements) {
      out += " " + p.node_id + ":" + p.slice_profile + "@" + std::to_string(p.slot_start);
      for (int g : p.gpu_indices) out += "," + std::to_string(g);
    }
    out += "\n";
  }
  for (const Preemption& p : d.preemptions) {
    out += "P " + p.job_id + " " + std::to_string(static_cast<int>(p.cause)) + " " + p.reason + "\n";
  }
  for (const PoolPrice& p : d.prices) {
    out += "C " + p.gpu_model + " " + std::to_string(p.clearing_price) + " " +
           std::to_string(p.capacity_units) + " " + std::to_string(p.used_units) + " " +
           std::to_string(p.pending_jobs) + "\n";
  }
  for (const auto& [id, r] : d.pending_reasons) out += "R " + id + " " + r.text + " " + r.outbid_model + "\n";
  for (const auto& [id, p] : d.running_prices) out += "$ " + id + " " + std::to_string(p) + "\n";
  for (const Reservation& r : d.reservations) out += "V " + r.job_id + " " + std::to_string(r.start_ms) + "\n";
  return out;
}

}  // namespace surplus::scheduler::testing
