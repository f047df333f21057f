// The worker agent's decision logic, metering arithmetic and sim backend: no network.

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/time/time.h"
#include "gpu_worker/runner.h"
#include "gpu_worker/sim_backend.h"
#include "gpu_worker/spool.h"
#include "gpu_worker/usage_record.h"
#include "gpu_worker/worker.h"
#include "surplus/gpu_models.h"

namespace surplus::worker {
namespace {
namespace v1 = surplus::v1;

// --- SimBackend ------------------------------------------------------------------

std::unique_ptr<SimBackend> MakeSim(std::vector<OwnerTraceEvent> trace, std::atomic<int64_t>* now) {
  SimBackendOptions o;
  o.node = "n1";
  o.gpu_model = "h100";  // normalized to H100-80GB
  o.gpus = 4;
  o.owner_trace = std::move(trace);
  o.elapsed_ms = [now] { return now->load(); };
  auto sim = SimBackend::Create(std::move(o));
  EXPECT_TRUE(sim.ok()) << sim.status();
  return std::move(*sim);
}

SliceRequest Slice(const std::string& job, std::vector<int> gpus, const std::string& profile,
                   int slot, int units, int64_t memory_mib) {
  SliceRequest r;
  r.job_id = job;
  r.gpu_indices = std::move(gpus);
  r.slice_profile = profile;
  r.slot_start = slot;
  r.compute_units = units;
  r.memory_mib = memory_mib;
  return r;
}

TEST(SimBackend, SliceEnvironmentIsWhatARealBackendWouldSet) {
  std::atomic<int64_t> now{0};
  auto sim = MakeSim({}, &now);
  // A 3g.40gb slice at memory slot 4 of GPU 2: MPS share round(100 * 3 / 7) = 43.
  auto slice = sim->PrepareSlice(Slice("a", {2}, "3g.40gb", 4, 3, 40 * 1024));
  ASSERT_TRUE(slice.ok()) << slice.status();
  EXPECT_EQ(slice->isolation, "sim");
  EXPECT_EQ(slice->env.at("CUDA_VISIBLE_DEVICES"), "2");
  EXPECT_EQ(slice->env.at("SURPLUS_SLICE_PROFILE"), "3g.40gb");
  EXPECT_EQ(slice->env.at("SURPLUS_SLICE_SLOT_START"), "4");
  EXPECT_EQ(slice->env.at("SURPLUS_GPU_MODEL"), "H100-80GB");
  EXPECT_EQ(slice->env.at("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), "43");
  EXPECT_EQ(slice->env.at("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"), "0=40960M");

  // Two whole GPUs: both visible, no MPS limits.
  auto whole = sim->PrepareSlice(Slice("b", {0, 1}, "7g.80gb", 0, 7, 0));
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->env.at("CUDA_VISIBLE_DEVICES"), "0,1");
  EXPECT_EQ(whole->env.count("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), 0u);

  // 1g.10gb at slot 4 overlaps the 3g at slots 4..7 of GPU 2; at slot 0 it does not.
  EXPECT_EQ(sim->PrepareSlice(Slice("c", {2}, "1g.10gb", 4, 1, 10240)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto small = sim->PrepareSlice(Slice("c", {2}, "1g.10gb", 0, 1, 10240));
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->env.at("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), "14");  // 100/7 = 14.3
  // Released slices free their slots.
  sim->ReleaseSlice("a");
  EXPECT_TRUE(sim->PrepareSlice(Slice("d", {2}, "1g.10gb", 4, 1, 10240)).ok());
  // GPU 9 is not on a 4-GPU node.
  EXPECT_EQ(sim->PrepareSlice(Slice("e", {9}, "7g.80gb", 0, 7, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SimBackend, GpuWorkloadsNeedARealGpu) {
  std::atomic<int64_t> now{0};
  auto sim = MakeSim({}, &now);
  BuiltinRequest req;
  req.kind = "gemm";
  std::atomic<bool> stop{false};
  auto r = sim->RunBuiltin(req, stop, [](const std::string&) {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(), "gemm needs a GPU: run the worker with --backend cuda");
}

TEST(SimBackend, TelemetryReplaysTheOwnerTrace) {
  // GPU 1 busy from 0 to 5 s; GPU 0 busy from 2 s on. Lines out of order on purpose.
  auto trace = ParseOwnerTrace("t_ms,gpu_index,busy\n0,1,1\n# comment\n5000,1,0\n2000,0,1\n");
  ASSERT_TRUE(trace.ok()) << trace.status();
  ASSERT_EQ(trace->size(), 3u);
  std::atomic<int64_t> now{1000};
  auto sim = MakeSim(*trace, &now);
  ASSERT_TRUE(sim->PrepareSlice(Slice("a", {0}, "3g.40gb", 0, 3, 40 * 1024)).ok());

  struct Case {
    int64_t t_ms;
    std::vector<size_t> owner_procs;  // per GPU 0..3
    std::vector<int> util;
  };
  // GPU 0 holds a 3g slice: 100 * 3 / 7 = 42 %; the owner adds 60 % (capped at 100).
  const Case cases[] = {
      {1000, {0, 1, 0, 0}, {42, 60, 0, 0}},
      {3000, {1, 1, 0, 0}, {100, 60, 0, 0}},
      {6000, {1, 0, 0, 0}, {100, 0, 0, 0}},
  };
  for (const Case& c : cases) {
    now = c.t_ms;
    auto s = sim->Sample();
    ASSERT_TRUE(s.ok());
    ASSERT_EQ(s->size(), 4u);
    for (int g = 0; g < 4; ++g) {
      EXPECT_EQ((*s)[g].processes.size(), c.owner_procs[g]) << "t=" << c.t_ms << " gpu " << g;
      EXPECT_EQ((*s)[g].utilization_pct, c.util[g]) << "t=" << c.t_ms << " gpu " << g;
    }
  }
  // At 6 s GPU 0 uses 40 GiB for the slice + 16 GiB for the owner.
  EXPECT_EQ((*sim->Sample())[0].memory_used_mib, 40 * 1024 + 16 * 1024);
  EXPECT_EQ((*sim->Sample())[0].processes[0].pid, kSimOwnerPidBase + 0);
}

TEST(SimBackend, OwnerTraceRejectsBadLines) {
  EXPECT_FALSE(ParseOwnerTrace("0,1").ok());
  EXPECT_FALSE(ParseOwnerTrace("0,1,2").ok());
  EXPECT_FALSE(ParseOwnerTrace("x,1,1").ok());
  EXPECT_FALSE(ParseOwnerTrace("-5,1,1").ok());
  EXPECT_TRUE(ParseOwnerTrace("\n\n").ok());
}

// --- UsageMeter ------------------------------------------------------------------

TEST(UsageMeter, IntervalsTileTheRunAndSumExactly) {
  // Wall time = 1'700'000'000'000 + steady. A 3g slice (3 of 7 units) on one GPU runs
  // from steady 1000 to 13'500: cuts at 6000 and 11'000, final at 13'500.
  const WallAnchor anchor{1'700'000'000'000, 0};
  UsageMeter m(1000, 3, 1);
  std::vector<UsageRecord> recs;
  for (int64_t now : {6000, 11'000, 13'500}) {
    UsageRecord r = m.Peek(now, anchor, now == 13'500);
    m.Commit(r, anchor);
    recs.push_back(r);
  }
  // Cumulative floor: G(t) = t * 3 / 7 truncated; G(5000) = 2142, G(10000) = 4285,
  // G(12500) = 5357. Intervals get 2142, 4285 - 2142 = 2143, 5357 - 4285 = 1072.
  // (Flooring each interval alone would give 2142 + 2142 + 1071 = 5355: 2 ms lost.)
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].gpu_ms, 2142);
  EXPECT_EQ(recs[1].gpu_ms, 2143);
  EXPECT_EQ(recs[2].gpu_ms, 1072);
  EXPECT_EQ(recs[0].gpu_ms + recs[1].gpu_ms + recs[2].gpu_ms, GpuMilliseconds(12'500, 3, 1));
  EXPECT_EQ(recs[0].start_ms, 1'700'000'001'000);
  for (size_t i = 1; i < recs.size(); ++i) EXPECT_EQ(recs[i].start_ms, recs[i - 1].end_ms);
  EXPECT_EQ(recs[2].end_ms, 1'700'000'013'500);
  EXPECT_FALSE(recs[0].is_final);
  EXPECT_TRUE(recs[2].is_final);
}

TEST(UsageMeter, PeekDoesNotAdvanceUntilCommitted) {
  // A failed spool append must not leave a gap: the next interval starts at the old cut.
  const WallAnchor anchor{1000, 0};
  UsageMeter m(0, 7, 4);
  UsageRecord lost = m.Peek(5000, anchor, false);
  (void)lost;  // not committed
  UsageRecord r = m.Peek(8000, anchor, false);
  EXPECT_EQ(r.start_ms, 1000);
  EXPECT_EQ(r.end_ms, 9000);
  // 4 whole GPUs for 8 s: 8000 * 7 * 4 / 7 = 32'000 GPU-ms.
  EXPECT_EQ(r.gpu_ms, 32'000);
  EXPECT_FALSE(m.cut_any());
  m.Commit(r, anchor);
  EXPECT_TRUE(m.cut_any());
  // A zero-length final after the last cut bills nothing.
  UsageRecord fin = m.Peek(8000, anchor, true);
  EXPECT_EQ(fin.start_ms, fin.end_ms);
  EXPECT_EQ(fin.gpu_ms, 0);
}

TEST(GpuMilliseconds, Arithmetic) {
  struct Case {
    int64_t wall_ms;
    int units;
    int gpus;
    int64_t want;
  };
  const Case cases[] = {
      {7000, 1, 1, 1000},      // 1g: a seventh of a GPU for 7 s
      {1000, 1, 1, 142},       // 1000 / 7 = 142.86, truncated
      {1500, 7, 4, 6000},      // four whole GPUs for 1.5 s
      {3'600'000, 7, 8, 28'800'000},  // eight GPUs for an hour: 8 GPU-hours
  };
  for (const Case& c : cases) {
    EXPECT_EQ(GpuMilliseconds(c.wall_ms, c.units, c.gpus), c.want)
        << c.wall_ms << " " << c.units << " " << c.gpus;
  }
}

// --- UsageRecord codec -----------------------------------------------------------

TEST(UsageRecordCodec, CarriesTheAttemptAndReadsVersionOne) {
  UsageRecord r;
  r.worker_id = "n1";
  r.seq = 9;
  r.job_id = "j";
  r.attempt = 3;
  r.start_ms = 10;
  r.end_ms = 20;
  r.gpu_ms = 4;
  const std::string v2 = EncodeUsageRecord(r);
  auto back = DecodeUsageRecord(v2);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->attempt, 3);
  EXPECT_EQ(*back, r);
  // A version 1 record (written before attempts were recorded): same layout, no attempt.
  std::string v1_bytes = v2.substr(0, v2.size() - 4);
  v1_bytes[0] = 1;
  auto old = DecodeUsageRecord(v1_bytes);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->attempt, 0);
  EXPECT_EQ(old->job_id, "j");
  EXPECT_EQ(old->gpu_ms, 4);
  // A version 2 record without its attempt is truncated.
  std::string cut = v2.substr(0, v2.size() - 4);
  EXPECT_FALSE(DecodeUsageRecord(cut).ok());
}

// --- JobTable --------------------------------------------------------------------

v1::JobStatus Final(const std::string& job, int attempt, v1::JobStatus::Phase phase, int code,
                    int64_t at_ms = 1000) {
  v1::JobStatus s;
  s.set_job_id(job);
  s.set_attempt(attempt);
  s.set_phase(phase);
  s.set_exit_code(code);
  s.set_at_ms(at_ms);
  return s;
}

TEST(JobTable, AssignmentsAreIdempotentPerAttempt) {
  JobTable t;
  t.Started("run", 2);
  t.Finish(Final("done", 1, v1::JobStatus::PHASE_EXITED, 0));
  struct Case {
    const char* job;
    int attempt;
    AssignAction want;
  };
  const Case cases[] = {
      {"new", 1, AssignAction::kStart},
      {"run", 2, AssignAction::kAlreadyRunning},     // repeated assignment: ignore
      {"run", 3, AssignAction::kStopOlderAttempt},   // attempt 2 is not wanted any more
      {"run", 1, AssignAction::kStale},
      {"done", 1, AssignAction::kResendFinal},       // never rerun a finished attempt
      {"done", 2, AssignAction::kStart},             // a requeued job's next attempt runs
  };
  for (const Case& c : cases) {
    EXPECT_EQ(t.OnAssignment(c.job, c.attempt), c.want) << c.job << "#" << c.attempt;
  }
}

TEST(JobTable, StopDecisions) {
  JobTable t;
  t.Started("run", 2);
  t.Finish(Final("done", 1, v1::JobStatus::PHASE_EXITED, 0));
  t.Finish(Final("old", 1, v1::JobStatus::PHASE_EXITED, 0));
  t.Started("old", 2);
  struct Case {
    const char* job;
    int attempt;
    bool stop_running, resend_final, never_started;
  };
  const Case cases[] = {
      {"run", 2, true, false, false},
      {"run", -1, true, false, false},   // no longer assigned here: stop what runs
      {"run", 3, true, false, true},     // newer attempt stopped: old one goes too
      {"run", 1, false, false, false},   // stale stop of an unknown older attempt
      {"old", 1, false, true, false},    // older, finished attempt: resend its end
      {"done", 1, false, true, false},
      {"done", -1, false, false, false},
      {"never", 4, false, false, true},  // cancelled before it reached this worker
      {"never", -1, false, false, false},
  };
  for (const Case& c : cases) {
    StopDecision d = t.OnStop(c.job, c.attempt);
    EXPECT_EQ(d.stop_running, c.stop_running) << c.job << "#" << c.attempt;
    EXPECT_EQ(d.resend_final, c.resend_final) << c.job << "#" << c.attempt;
    EXPECT_EQ(d.report_never_started, c.never_started) << c.job << "#" << c.attempt;
  }
}

TEST(JobTable, FinishedAttemptsSurviveARestartAndConfirmations) {
  JobTable t;
  t.Started("a", 1);
  t.Finish(Final("a", 1, v1::JobStatus::PHASE_EXITED, 3, 2000));
  t.Finish(Final("b", 2, v1::JobStatus::PHASE_STOPPED, -1, 1000));
  EXPECT_FALSE(t.RunningAttempt("a").has_value());
  ASSERT_EQ(t.Unconfirmed().size(), 2u);
  EXPECT_EQ(t.Unconfirmed()[0].job_id(), "b");  // oldest first
  t.Confirm("a", 1);
  ASSERT_EQ(t.Unconfirmed().size(), 1u);

  JobTable restored;
  ASSERT_TRUE(restored.ParseFinished(t.SerializeFinished()).ok());
  EXPECT_EQ(restored.OnAssignment("a", 1), AssignAction::kResendFinal);
  ASSERT_NE(restored.FindFinished("a", 1), nullptr);
  EXPECT_EQ(restored.FindFinished("a", 1)->status.exit_code(), 3);
  EXPECT_TRUE(restored.FindFinished("a", 1)->confirmed);
  EXPECT_EQ(restored.Unconfirmed().size(), 1u);
  restored.Unconfirm("a", 1);  // the control plane asked again
  EXPECT_EQ(restored.Unconfirmed().size(), 2u);

  EXPECT_FALSE(restored.ParseFinished("x garbage\n").ok());
  // Pruning drops entries older than the horizon, then the oldest beyond the cap.
  restored.Prune(1500, 10);
  EXPECT_EQ(restored.finished_count(), 1u);
  restored.Finish(Final("c", 1, v1::JobStatus::PHASE_EXITED, 0, 3000));
  restored.Prune(0, 1);
  EXPECT_EQ(restored.finished_count(), 1u);
  EXPECT_NE(restored.FindFinished("c", 1), nullptr);
}

// --- Final statuses, logs, helpers -----------------------------------------------

TEST(ExecFinalStatus, PhasesAndExitCodes) {
  auto exited = ExecFinalStatus("j", 1, false, 3, "", 0, 5);
  EXPECT_EQ(exited.phase(), v1::JobStatus::PHASE_EXITED);
  EXPECT_EQ(exited.exit_code(), 3);
  // SIGKILL (9) reads as 128 + 9 = 137.
  auto killed = ExecFinalStatus("j", 1, true, SIGKILL, "", 0, 5);
  EXPECT_EQ(killed.phase(), v1::JobStatus::PHASE_EXITED);
  EXPECT_EQ(killed.exit_code(), 137);
  auto stopped = ExecFinalStatus("j", 1, true, SIGTERM, "outbid", 0, 5);
  EXPECT_EQ(stopped.phase(), v1::JobStatus::PHASE_STOPPED);
  EXPECT_EQ(stopped.exit_code(), 143);
  EXPECT_EQ(stopped.message(), "stopped: outbid");
  auto too_long = ExecFinalStatus("j", 1, true, SIGKILL, "whatever", 30, 5);
  EXPECT_EQ(too_long.phase(), v1::JobStatus::PHASE_TIMED_OUT);
  EXPECT_EQ(too_long.message(), "exceeded its maximum runtime of 30 s");
}

TEST(LogCursor, ChunksAtMost64KiBAndResendsUnackedWithSameBoundaries) {
  LogCursor c;
  // 200 KiB: 64 + 64 + 64 + 8 KiB.
  const int64_t size = 200 * 1024;
  std::vector<std::pair<int64_t, int64_t>> got;
  while (auto chunk = c.Next(size)) got.push_back(*chunk);
  ASSERT_EQ(got.size(), 4u);
  using Range = std::pair<int64_t, int64_t>;
  EXPECT_EQ(got[0], Range(0, 65536));
  EXPECT_EQ(got[3], Range(196608, 8192));
  // Four chunks await an ack: no fifth even when the file grows.
  EXPECT_FALSE(c.Next(size + 100).has_value());
  EXPECT_FALSE(c.Drained(size));
  c.Ack();
  c.Ack();
  // After a reconnect the two unacked chunks go again, unchanged.
  ASSERT_EQ(c.unacked().size(), 2u);
  EXPECT_EQ(c.unacked()[0], got[2]);
  c.Ack();
  c.Ack();
  EXPECT_TRUE(c.Drained(size));
  EXPECT_FALSE(c.Drained(size + 1));
  // Nothing beyond what the control plane keeps.
  LogCursor big;
  int64_t sent = 0;
  while (auto chunk = big.Next(LogCursor::kMaxLogBytes + 5000)) {
    sent += chunk->second;
    big.Ack();
  }
  EXPECT_EQ(sent, LogCursor::kMaxLogBytes);
  EXPECT_TRUE(big.Drained(LogCursor::kMaxLogBytes + 5000));
}

TEST(Helpers, SafeFileNameAndPlacementMask) {
  EXPECT_EQ(SafeFileName("job-1_a.b"), "job-1_a.b");
  EXPECT_EQ(SafeFileName("a/b c"), "a%2fb%20c");
  EXPECT_EQ(SafeFileName(".."), "%..%");
  EXPECT_EQ(SafeFileName(""), "%%");
  // 3g.40gb takes 4 memory slots; at slot 4 that is slots 4..7 = 0xF0.
  EXPECT_EQ(PlacementMask("H100-80GB", "3g.40gb", 4), 0xF0);
  EXPECT_EQ(PlacementMask("H100-80GB", "1g.10gb", 2), 0x04);
  EXPECT_EQ(PlacementMask("H100-80GB", "7g.80gb", 0), 0xFF);
}

// --- Worker restart ----------------------------------------------------------------

class WorkerStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/surplus-worker-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(WorkerStateTest, RestartKillsLeftoverJobsAndReportsThemStopped) {
  // An earlier worker started a job and died; its process still runs.
  Runner runner;
  ExecSpec spec;
  spec.job_id = "left";
  spec.argv = {"sleep", "30"};
  spec.work_dir = dir_ + "/work";
  spec.log_path = dir_ + "/work/job.log";
  auto pid = runner.Start(spec);
  ASSERT_TRUE(pid.ok()) << pid.status();
  const uint64_t ticks = ProcessStartTicks(*pid).value_or(0);
  std::filesystem::create_directories(dir_ + "/running");
  {
    std::ofstream f(dir_ + "/running/left-2");
    f << "job_id=left\nattempt=2\npid=" << *pid << "\nstart_ticks=" << ticks
      << "\ntenant_id=acme\ngpu_model=H100-80GB\nslice_profile=7g.80gb\ngpu_indices=0\n"
      << "last_end_ms=1700000000000\n";
  }

  WorkerOptions o;
  o.node = "n1";
  o.state_dir = dir_;
  o.job_cgroups = "off";  // leave the host's cgroup tree alone
  SimBackendOptions so;
  so.gpus = 1;
  auto sim = SimBackend::Create(so);
  ASSERT_TRUE(sim.ok());
  auto w = Worker::Create(o, std::move(*sim));
  ASSERT_TRUE(w.ok()) << w.status();

  auto exit = runner.WaitForExit("left", absl::Seconds(5));
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->kind, ExitKind::kSignaled);
  EXPECT_EQ(exit->signal, SIGKILL);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/running/left-2"));

  std::ifstream in(dir_ + "/finished_jobs");
  std::stringstream ss;
  ss << in.rdbuf();
  JobTable t;
  ASSERT_TRUE(t.ParseFinished(ss.str()).ok());
  const JobTable::Finished* f = t.FindFinished("left", 2);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->status.phase(), v1::JobStatus::PHASE_STOPPED);
  EXPECT_EQ(f->status.exit_code(), -1);
  EXPECT_FALSE(f->confirmed);
  w->reset();  // releases the spool

  // The run is closed for billing with an empty final record after its last interval.
  auto spool = UsageSpool::Open(dir_ + "/spool");
  ASSERT_TRUE(spool.ok()) << spool.status();
  auto pending = (*spool)->Pending();
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].job_id, "left");
  EXPECT_EQ((*pending)[0].attempt, 2);
  EXPECT_TRUE((*pending)[0].is_final);
  EXPECT_EQ((*pending)[0].start_ms, 1'700'000'000'000);
  EXPECT_EQ((*pending)[0].end_ms, 1'700'000'000'000);
  EXPECT_EQ((*pending)[0].gpu_ms, 0);
}

}  // namespace
}  // namespace surplus::worker
