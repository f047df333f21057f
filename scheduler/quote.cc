#include "scheduler/quote.h"

#include <algorithm>

namespace surplus::scheduler {
namespace {

// Never a real job id: the control plane's ids are printable.
constexpr char kCandidateId[] = "\x01quote";

int CountOutbid(const Decisions& d) {
  return static_cast<int>(std::count_if(d.preemptions.begin(), d.preemptions.end(),
                                        [](const Preemption& p) { return p.cause == PreemptCause::kOutbid; }));
}

}  // namespace

QuoteBaseline BaselineOf(IncrementalScheduler& engine, int64_t now_ms) {
  const Decisions d = engine.DryRound(now_ms);
  return QuoteBaseline{CountOutbid(d), d.prices};
}

Quote QuoteJob(IncrementalScheduler& engine, int64_t now_ms, const JobView& candidate,
               const std::optional<QuoteBaseline>& given) {
  const QuoteBaseline baseline = given ? *given : BaselineOf(engine, now_ms);
  JobView job = candidate;
  job.id = kCandidateId;
  const Decisions d = engine.DryRound(now_ms, job);

  Quote q;
  for (const Assignment& a : d.assignments) {
    if (a.job_id != job.id) continue;
    q.would_start_now = true;
    q.price = a.price;
    if (!a.placements.empty()) q.gpu_model = engine.NodeModel(a.placements.front().node_id);
  }
  if (auto it = d.pending_reasons.find(job.id); it != d.pending_reasons.end()) q.reason = it->second.text;
  // Outbid preemptions the round would make anyway, without the candidate, are not its doing.
  q.would_preempt = std::max(0, CountOutbid(d) - baseline.outbid);
  // The pools this job can run in: all, or the one of the model it names.
  const GpuModel* want = job.gpu_model.empty() ? nullptr : FindGpuModel(job.gpu_model);
  auto pools_of_job = [&](const std::vector<PoolPrice>& all, std::vector<PoolPrice>* out) {
    for (const PoolPrice& p : all) {
      if (want == nullptr || p.gpu_model == want->name) out->push_back(p);
    }
  };
  pools_of_job(d.prices, &q.prices);
  pools_of_job(baseline.prices, &q.current_prices);
  return q;
}

Quote QuoteJob(const Snapshot& snapshot, const JobView& candidate) {
  IncrementalScheduler engine(snapshot);
  return QuoteJob(engine, snapshot.now_ms, candidate);
}

}  // namespace surplus::scheduler
