// Tests of the CUDA backend on a real NVIDIA GPU (label gpu). Every test skips, saying
// why, where there is no GPU, no model table for it, or no MPS.
//
// The exec-job tests run surplus-cuda-probe: its path comes from SURPLUS_CUDA_PROBE or,
// by default, from the build tree.

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gpu_worker/cuda/cuda_backend.h"
#include "gtest/gtest.h"
#include "surplus/gpu_models.h"

#ifndef SURPLUS_CUDA_PROBE_PATH
#define SURPLUS_CUDA_PROBE_PATH "surplus-cuda-probe"
#endif

namespace surplus::worker {
namespace {

using Clock = std::chrono::steady_clock;

class CudaBackendGpuTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/surplus-gputest-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      skip_reason_ = new std::string("cannot create a state folder");
      return;
    }
    state_dir_ = new std::string(tmpl);
    CudaBackendOptions options;
    options.state_dir = *state_dir_;
    options.sample_interval = std::chrono::milliseconds(200);
    auto backend = CudaBackend::Create(options);
    if (!backend.ok()) {
      skip_reason_ = new std::string(backend.status().message());
      return;
    }
    backend_ = backend->release();
  }
  static void TearDownTestSuite() {
    delete backend_;  // quits the MPS daemons it started
    backend_ = nullptr;
    if (state_dir_ != nullptr) {
      std::error_code ec;
      std::filesystem::remove_all(*state_dir_, ec);
    }
  }

  void SetUp() override {
    if (backend_ == nullptr) GTEST_SKIP() << *skip_reason_;
    auto gpus = backend_->Discover();
    ASSERT_TRUE(gpus.ok()) << gpus.status();
    gpu_ = (*gpus)[0];
  }

  // The model table of GPU 0, or null (the test then skips).
  const GpuModel* Model() const { return FindGpuModel(gpu_.model); }

  SliceRequest Slice(const std::string& job, const std::string& profile, int start,
                     bool exec) const {
    const SliceProfile* p = Model()->FindProfile(profile);
    SliceRequest r;
    r.job_id = job;
    r.gpu_indices = {0};
    r.slice_profile = p->name;
    r.slot_start = start;
    r.sm_count = p->sm_count;
    r.compute_units = p->compute_units;
    r.memory_mib = p->memory_mib;
    r.exec = exec;
    return r;
  }

  // Runs a built-in on a prepared (or implicit) slice and returns its result.
  absl::StatusOr<BuiltinResult> Run(const SliceRequest& slice, const std::string& kind,
                                    int64_t duration_ms, const std::atomic<bool>* stop = nullptr,
                                    std::vector<std::string>* lines = nullptr) {
    BuiltinRequest r;
    r.kind = kind;
    r.duration_ms = duration_ms;
    r.slice = slice;
    std::atomic<bool> never{false};
    return backend_->RunBuiltin(r, stop ? *stop : never, [lines](const std::string& line) {
      if (lines) lines->push_back(line);
    });
  }

  static CudaBackend* backend_;
  static std::string* skip_reason_;
  static std::string* state_dir_;
  GpuTelemetry gpu_;
};

CudaBackend* CudaBackendGpuTest::backend_ = nullptr;
std::string* CudaBackendGpuTest::skip_reason_ = nullptr;
std::string* CudaBackendGpuTest::state_dir_ = nullptr;

#define SKIP_WITHOUT_MODEL_TABLE()                                              \
  if (Model() == nullptr) {                                                     \
    GTEST_SKIP() << "GPU model '" << gpu_.model << "' has no slice table";      \
  }

TEST_F(CudaBackendGpuTest, TelemetryValuesAreSane) {
  auto sample = backend_->Sample();
  ASSERT_TRUE(sample.ok()) << sample.status();
  ASSERT_FALSE(sample->empty());
  for (const GpuTelemetry& g : *sample) {
    SCOPED_TRACE(absl::StrCat("GPU ", g.index, " ", backend_->DeviceName(g.index)));
    EXPECT_TRUE(absl::StartsWith(g.uuid, "GPU-")) << g.uuid;
    EXPECT_FALSE(g.model.empty());
    EXPECT_GT(g.memory_total_mib, 1024);
    EXPECT_GE(g.memory_used_mib, 0);
    EXPECT_LE(g.memory_used_mib, g.memory_total_mib);
    EXPECT_GE(g.temperature_c, 5);
    EXPECT_LE(g.temperature_c, 110);
    EXPECT_GT(g.power_mw, 5'000);       // even an idle data-centre GPU draws > 5 W
    EXPECT_LT(g.power_mw, 1'500'000);
    EXPECT_GE(g.utilization_pct, -1);
    EXPECT_LE(g.utilization_pct, 100);
    EXPECT_TRUE(g.healthy) << g.health_reason;
    EXPECT_EQ(g.ecc_uncorrected, 0u);
    RecordProperty(absl::StrCat("gpu", g.index, "_model"), g.model);
    RecordProperty(absl::StrCat("gpu", g.index, "_power_mw"), std::to_string(g.power_mw));
  }
}

TEST_F(CudaBackendGpuTest, WorkerProcessIsNotOwnerWork) {
  // The backend holds a CUDA context on every GPU, so the worker is on GPU 0.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto sample = backend_->Sample();
  ASSERT_TRUE(sample.ok());
  const GpuTelemetry& g = (*sample)[0];
  if (g.processes.empty()) {
    GTEST_SKIP() << "NVML lists no compute process although the worker holds a context "
                    "(a container's pid namespace hides them)";
  }
  const int64_t self = ::getpid();
  for (const GpuProcess& p : backend_->OwnerProcesses(g)) EXPECT_NE(p.pid, self);
  bool listed = false;
  for (const GpuProcess& p : g.processes) listed = listed || p.pid == self;
  if (!listed) {
    // NVML reports pids of the host's namespace; inside a container they differ.
    std::cout << "note: NVML pids are from another pid namespace\n";
  }
  EXPECT_TRUE(backend_->IsWorkerProcess(self));
}

TEST_F(CudaBackendGpuTest, GemmOnWholeGpuReportsTflops) {
  SKIP_WITHOUT_MODEL_TABLE();
  std::vector<std::string> lines;
  auto r = Run(Slice("gemm-full", Model()->WholeGpu().name, 0, false), "gemm", 3000, nullptr,
               &lines);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->summary.find("TFLOP/s"), std::string::npos) << r->summary;
  EXPECT_GT(r->metrics.at("tflops"), 50.0);  // any GPU with BF16 tensor cores
  EXPECT_GE(r->metrics.at("seconds"), 2.5);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), r->summary);
  RecordProperty("full_tflops", std::to_string(r->metrics.at("tflops")));
}

TEST_F(CudaBackendGpuTest, GreenContextSliceGetsItsShare) {
  SKIP_WITHOUT_MODEL_TABLE();
  auto full = Run(Slice("share-full", Model()->WholeGpu().name, 0, false), "gemm", 2000);
  ASSERT_TRUE(full.ok()) << full.status();
  const SliceRequest one = Slice("share-1g", "1g.10gb", 0, false);
  auto prepared = backend_->PrepareSlice(one);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->isolation, "green-context");
  const int sms = backend_->SliceSmCount(one.job_id);
  EXPECT_GE(sms, one.sm_count);  // rounded up to the split granularity, never down
  EXPECT_LE(sms, one.sm_count + 8);
  auto slice = Run(one, "gemm", 2000);
  backend_->ReleaseSlice(one.job_id);
  ASSERT_TRUE(slice.ok()) << slice.status();
  EXPECT_EQ(slice->metrics.at("sm_count"), sms);
  // The slice's rate scaled to the whole GPU should be near the whole GPU's: within
  // [0.6, 1.6] of sms/total. Without a real partition it would be about 132/16 = 8x.
  const double expected = full->metrics.at("tflops") * sms / Model()->sm_count;
  const double ratio = slice->metrics.at("tflops") / expected;
  EXPECT_GT(ratio, 0.6) << slice->summary << " vs " << full->summary;
  EXPECT_LT(ratio, 1.6) << slice->summary << " vs " << full->summary;
  RecordProperty("slice_1g_ratio", std::to_string(ratio));
}

TEST_F(CudaBackendGpuTest, TwoSlicesRunConcurrentlyWithoutHurtingEachOther) {
  SKIP_WITHOUT_MODEL_TABLE();
  // Two 1g slices: together far below the GPU's power limit, so what could slow one
  // down is the other taking its SMs. Were the partitions to overlap, each would get
  // about half its rate.
  const SliceRequest left = Slice("iso-left", "1g.10gb", 0, false);
  const SliceRequest right = Slice("iso-right", "1g.10gb", 6, false);
  auto left_alone = Run(left, "gemm", 2000);
  auto right_alone = Run(right, "gemm", 2000);
  ASSERT_TRUE(left_alone.ok()) << left_alone.status();
  ASSERT_TRUE(right_alone.ok()) << right_alone.status();

  ASSERT_TRUE(backend_->PrepareSlice(left).ok());
  // A 2g at slot 0 overlaps the 1g there: refused.
  auto overlap = backend_->PrepareSlice(Slice("iso-overlap", "2g.20gb", 0, false));
  EXPECT_EQ(overlap.status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(backend_->PrepareSlice(right).ok());
  absl::StatusOr<BuiltinResult> left_both, right_both;
  std::thread a([&] { left_both = Run(left, "gemm", 3000); });
  std::thread b([&] { right_both = Run(right, "gemm", 3000); });
  a.join();
  b.join();
  backend_->ReleaseSlice(left.job_id);
  backend_->ReleaseSlice(right.job_id);
  ASSERT_TRUE(left_both.ok()) << left_both.status();
  ASSERT_TRUE(right_both.ok()) << right_both.status();
  const double lr = left_both->metrics.at("tflops") / left_alone->metrics.at("tflops");
  const double rr = right_both->metrics.at("tflops") / right_alone->metrics.at("tflops");
  EXPECT_GT(lr, 0.85) << left_both->summary << " vs alone " << left_alone->summary;
  EXPECT_GT(rr, 0.85) << right_both->summary << " vs alone " << right_alone->summary;
  RecordProperty("concurrent_left_ratio", std::to_string(lr));
  RecordProperty("concurrent_right_ratio", std::to_string(rr));
}

TEST_F(CudaBackendGpuTest, StopEndsARunPromptly) {
  SKIP_WITHOUT_MODEL_TABLE();
  std::atomic<bool> stop{false};
  absl::StatusOr<BuiltinResult> r;
  const auto t0 = Clock::now();
  std::thread run([&] { r = Run(Slice("stop", "2g.20gb", 0, false), "gemm", 60000, &stop); });
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const auto stopped_at = Clock::now();
  stop = true;
  run.join();
  const double reaction_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - stopped_at).count();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(reaction_ms, 500) << "stop took " << reaction_ms << " ms";
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 10);
}

TEST_F(CudaBackendGpuTest, AllReduceOnOneGpu) {
  SKIP_WITHOUT_MODEL_TABLE();
  std::vector<std::string> lines;
  auto r = Run(Slice("allreduce", Model()->WholeGpu().name, 0, false), "allreduce", 2000,
               nullptr, &lines);
  if (!r.ok() && r.status().code() == absl::StatusCode::kUnimplemented) {
    GTEST_SKIP() << r.status().message();
  }
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->metrics.at("algbw_gbps"), 10.0) << r->summary;
  EXPECT_EQ(r->metrics.at("busbw_gbps"), 0.0);  // 2(n-1)/n = 0 for n = 1
  EXPECT_NE(r->summary.find("busbw is 0 by definition"), std::string::npos);
  RecordProperty("allreduce_algbw_gbps", std::to_string(r->metrics.at("algbw_gbps")));
}

// --- exec jobs under MPS -----------------------------------------------------------------

struct ProbeRun {
  int exit_code = -1;
  std::string output;
};

// Runs the probe with the slice's environment added, as the worker's runner would.
ProbeRun RunProbe(const std::map<std::string, std::string>& env, const std::string& args) {
  const char* probe = std::getenv("SURPLUS_CUDA_PROBE");
  std::string cmd = "env";
  for (const auto& [k, v] : env) absl::StrAppend(&cmd, " '", k, "=", v, "'");
  absl::StrAppend(&cmd, " '", probe ? probe : SURPLUS_CUDA_PROBE_PATH, "' ", args, " 2>&1");
  ProbeRun run;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return run;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), pipe) != nullptr) run.output += buf;
  const int status = ::pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

// The integer value of `"key":N` in the probe's one-line JSON; -1 when absent.
int JsonInt(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\":";
  const size_t at = json.find(needle);
  if (at == std::string::npos) return -1;
  return std::atoi(json.c_str() + at + needle.size());
}

bool MpsControlAvailable() {
  return std::system("command -v nvidia-cuda-mps-control >/dev/null 2>&1") == 0;
}

TEST_F(CudaBackendGpuTest, ExecCudaProgramRunsUnderMps) {
  SKIP_WITHOUT_MODEL_TABLE();
  if (gpu_.mig_enabled) GTEST_SKIP() << "GPU 0 is in MIG mode: exec slices use MIG, not MPS";
  if (!MpsControlAvailable()) GTEST_SKIP() << "nvidia-cuda-mps-control is not in PATH";
  const SliceRequest slice = Slice("mps-exec", "2g.20gb", 0, true);
  auto prepared = backend_->PrepareSlice(slice);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->isolation, "mps");
  EXPECT_EQ(prepared->env.at("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), "29");
  EXPECT_EQ(prepared->env.at("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"), "0=19968M");
  ProbeRun run = RunProbe(prepared->env, "--alloc-mib 256 --kernel-ms 300");
  backend_->ReleaseSlice(slice.job_id);
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("\"ok\":true"), std::string::npos) << run.output;
  // Under MPS the job sees its share of the SMs (29 % of the GPU) and its memory limit.
  const int sms = JsonInt(run.output, "sms");
  EXPECT_GT(sms, 0) << run.output;
  EXPECT_LT(sms, Model()->sm_count) << "the job sees the whole GPU: " << run.output;
  EXPECT_LE(JsonInt(run.output, "mem_free_mib"), 19968) << run.output;
  // The MPS server of our daemon started for this client: it logs in our folder.
  const std::string log_dir = prepared->env.at("CUDA_MPS_LOG_DIRECTORY");
  EXPECT_TRUE(std::filesystem::exists(log_dir + "/server.log"))
      << "no MPS server log in " << log_dir << "; probe said " << run.output;
  RecordProperty("probe_output", run.output);
}

TEST_F(CudaBackendGpuTest, MpsMemoryLimitIsEnforced) {
  SKIP_WITHOUT_MODEL_TABLE();
  if (gpu_.mig_enabled) GTEST_SKIP() << "GPU 0 is in MIG mode: exec slices use MIG, not MPS";
  if (!MpsControlAvailable()) GTEST_SKIP() << "nvidia-cuda-mps-control is not in PATH";
  SliceRequest slice = Slice("mps-limit", "1g.10gb", 3, true);
  slice.memory_mib = 1024;  // far below the GPU's free memory
  auto prepared = backend_->PrepareSlice(slice);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->env.at("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"), "0=1024M");
  ProbeRun within = RunProbe(prepared->env, "--alloc-mib 512 --kernel-ms 50");
  ProbeRun beyond = RunProbe(prepared->env, "--alloc-mib 2048 --kernel-ms 50");
  backend_->ReleaseSlice(slice.job_id);
  EXPECT_EQ(within.exit_code, 0) << within.output;
  EXPECT_LE(JsonInt(within.output, "mem_free_mib"), 1024) << within.output;
  EXPECT_EQ(beyond.exit_code, 2) << "allocating 2 GiB under a 1 GiB limit: " << beyond.output;
  RecordProperty("probe_beyond_output", beyond.output);
}

}  // namespace
}  // namespace surplus::worker
