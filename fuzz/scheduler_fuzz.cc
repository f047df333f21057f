// The scheduler reads its snapshot from the store, which a bug elsewhere could leave
// inconsistent: unknown models and profiles, placements on missing nodes or GPUs, two
// running jobs on the same slots, duplicate ids. Whatever the snapshot, a round must not
// crash (the sanitizers watch memory and undefined behaviour), must give the same
// decisions twice, and must not charge a spot job more than its bid. A quote's dry round,
// with a candidate copied from the snapshot's jobs, must leave the engine deciding as if it
// had not run.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include "scheduler/incremental.h"
#include "scheduler/scheduler.h"
#include "tests/unit/scheduler_test_util.h"

namespace {

using namespace surplus;             // NOLINT
using namespace surplus::scheduler;  // NOLINT
using surplus::scheduler::testing::Fingerprint;

// Reads the fuzz input as a stream of small numbers; zeros once it runs out.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t Next() { return pos_ < size_ ? data_[pos_++] : 0; }
  int Pick(int n) { return Next() % n; }
  bool Bit() { return (Next() & 1) != 0; }
  int64_t Int(int64_t scale) { return static_cast<int64_t>(Next()) * scale; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

const char* const kModels[] = {"H100-80GB", "A100-80GB", "H200-141GB", "no-such-gpu", ""};
const char* const kProfiles[] = {"1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "9g.90gb", ""};

Snapshot Build(Bytes& in) {
  Snapshot s;
  s.now_ms = 1'000'000 + in.Int(1000);
  const int nodes = 1 + in.Pick(5);
  for (int n = 0; n < nodes; ++n) {
    NodeView node;
    node.id = "n" + std::to_string(in.Pick(nodes + 1));  // may repeat
    node.gpu_model = kModels[in.Pick(5)];
    node.fabric = in.Bit() ? "f" + std::to_string(in.Pick(2)) : "";
    node.cordoned = in.Pick(8) == 0;
    node.draining = in.Pick(8) == 0;
    const int gpus = in.Pick(9);
    for (int g = 0; g < gpus; ++g) {
      GpuView v;
      v.index = in.Pick(10) == 0 ? in.Pick(16) : g;
      v.tenant_mask = in.Pick(4) == 0 ? in.Next() : 0;
      v.owner_busy = in.Pick(6) == 0;
      v.offerable = in.Pick(6) != 0;
      v.healthy = in.Pick(10) != 0;
      if (in.Pick(6) == 0) {  // MIG mode; instances may be invalid, overlapping or repeated
        v.mig = true;
        for (int k = in.Pick(4); k > 0; --k) v.mig_slices.emplace_back(kProfiles[in.Pick(8)], in.Pick(9) - 1);
      }
      node.gpus.push_back(v);
    }
    s.nodes.push_back(node);
  }
  const int jobs = in.Pick(24);
  for (int j = 0; j < jobs; ++j) {
    JobView job;
    job.id = "j" + std::to_string(in.Pick(20) == 0 ? 0 : j);  // now and then a duplicate
    job.tenant_id = "t" + std::to_string(in.Pick(3));
    job.tier = in.Pick(5) == 0 ? Tier::kOnDemand : Tier::kSpot;
    job.bid = in.Int(50'000);
    switch (in.Pick(3)) {
      case 0: job.shape = JobShape::Slice(kProfiles[in.Pick(8)]); break;
      case 1: job.shape = JobShape::WholeGpus(in.Pick(10)); break;
      default: job.shape = JobShape::Gang(in.Pick(4), in.Pick(9)); break;
    }
    job.gpu_model = in.Pick(3) == 0 ? kModels[in.Pick(5)] : "";
    job.submit_seq = in.Pick(64);
    job.max_runtime_ms = in.Bit() ? in.Int(60'000) : 0;
    job.running = in.Pick(3) == 0;
    if (job.running) {
      job.started_at_ms = s.now_ms - in.Int(10'000);
      const int parts = 1 + in.Pick(2);
      for (int p = 0; p < parts; ++p) {
        NodePlacement pl;
        pl.node_id = "n" + std::to_string(in.Pick(nodes + 1));
        const int k = 1 + in.Pick(3);
        for (int g = 0; g < k; ++g) pl.gpu_indices.push_back(in.Pick(10) - 1);
        pl.slice_profile = kProfiles[in.Pick(8)];
        pl.slot_start = in.Pick(10) - 1;
        job.placements.push_back(pl);
      }
      job.preempting = in.Pick(4) == 0;
      job.preempt_deadline_ms = job.preempting && in.Bit() ? s.now_ms + in.Int(1000) : 0;
    }
    s.jobs.push_back(job);
  }
  for (const char* model : {"H100-80GB", "A100-80GB"}) {
    if (in.Bit()) s.market.reserve_price[model] = in.Int(20'000);
    if (in.Bit()) s.market.list_price[model] = in.Int(50'000);
  }
  s.market.min_preempt_gap = in.Int(10'000);
  s.market.min_runtime_before_preempt_ms = in.Int(100);
  s.market.preempt_notice_ms = in.Int(1000);
  for (int t = 0; t < 3; ++t) {
    if (in.Pick(3) == 0) s.market.quotas["t" + std::to_string(t)] = TenantQuota{in.Pick(6), in.Pick(6)};
  }
  return s;
}


}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes in(data, size);
  const Snapshot s = Build(in);
  const Decisions d = Schedule(s);
  if (Fingerprint(d) != Fingerprint(Schedule(s))) std::abort();
  {
    std::optional<JobView> cand;
    if (!s.jobs.empty() && in.Bit()) {
      cand = s.jobs[static_cast<size_t>(in.Pick(static_cast<int>(s.jobs.size())))];
      cand->id = "\x01" "candidate";
    }
    IncrementalScheduler quoted(s);
    IncrementalScheduler plain(s);
    quoted.DryRound(s.now_ms, cand);
    RoundOptions full;
    full.full_report = true;
    if (Fingerprint(quoted.Round(s.now_ms, full)) != Fingerprint(d)) std::abort();
    plain.Round(s.now_ms, full);
    // And after a change (a job ends), between two rounds that report only changes.
    if (!s.jobs.empty()) {
      SnapshotDelta delta;
      delta.remove_jobs.push_back(s.jobs[static_cast<size_t>(in.Pick(static_cast<int>(s.jobs.size())))].id);
      quoted.ApplyDelta(delta);
      plain.ApplyDelta(delta);
    }
    const int64_t later = s.now_ms + in.Int(1000);
    quoted.DryRound(later, cand);
    if (Fingerprint(quoted.Round(later)) != Fingerprint(plain.Round(later))) std::abort();
  }
  // No spot job pays more than its bid (jobs whose id is unique: with duplicates, which
  // view counts is the store's business).
  std::map<std::string, int> count;
  for (const JobView& j : s.jobs) ++count[j.id];
  for (const auto& a : d.assignments) {
    for (const JobView& j : s.jobs) {
      if (j.id == a.job_id && count[j.id] == 1 && j.tier == Tier::kSpot && a.price > j.bid) std::abort();
    }
  }
  for (const auto& [id, price] : d.running_prices) {
    for (const JobView& j : s.jobs) {
      if (j.id == id && count[j.id] == 1 && j.tier == Tier::kSpot && price > j.bid) std::abort();
    }
  }
  return 0;
}
