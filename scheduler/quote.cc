#include "scheduler/quote.h"

#include <algorithm>

namespace surplus::scheduler {

int BaselineOutbid(const Snapshot& snapshot) {
  int n = 0;
  for (const Preemption& p : Schedule(snapshot).preemptions) {
    if (p.cause == PreemptCause::kOutbid) ++n;
  }
  return n;
}

Quote QuoteJob(const Snapshot& snapshot, const JobView& candidate, std::optional<int> baseline_outbid) {
  Snapshot s = snapshot;
  JobView job = candidate;
  if (job.id.empty()) job.id = "\x01quote";
  job.running = false;
  job.placements.clear();
  int64_t last_seq = 0;
  for (const JobView& j : s.jobs) last_seq = std::max(last_seq, j.submit_seq);
  job.submit_seq = last_seq + 1;
  s.jobs.push_back(job);
  const Decisions d = Schedule(s);
  // Outbid preemptions the round would make anyway, without the candidate.
  const int baseline = baseline_outbid ? *baseline_outbid : BaselineOutbid(snapshot);

  Quote q;
  for (const Assignment& a : d.assignments) {
    if (a.job_id != job.id) continue;
    q.would_start_now = true;
    q.price = a.price;
    for (const NodeView& n : s.nodes) {
      if (!a.placements.empty() && n.id == a.placements.front().node_id) q.gpu_model = n.gpu_model;
    }
  }
  if (auto it = d.pending_reasons.find(job.id); it != d.pending_reasons.end()) q.reason = it->second.text;
  for (const Preemption& p : d.preemptions) {
    if (p.cause == PreemptCause::kOutbid) ++q.would_preempt;
  }
  q.would_preempt = std::max(0, q.would_preempt - baseline);
  const GpuModel* want = job.gpu_model.empty() ? nullptr : FindGpuModel(job.gpu_model);
  for (const PoolPrice& p : d.prices) {
    if (want == nullptr || p.gpu_model == want->name) q.prices.push_back(p);
  }
  return q;
}

}  // namespace surplus::scheduler
