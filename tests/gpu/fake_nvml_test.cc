// The NVML side of the CUDA backend against a fake libnvidia-ml.so (tests/gpu/fake_nvml.cc)
// that exports the driver's functions: discovery, samples, unsupported queries, process
// lists longer than the first buffer, owner work, XID and ECC health, a GPU off the bus,
// MIG instances as slices, the sampling rate. Runs everywhere the CUDA backend builds
// (label unit); no GPU and no driver needed.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <time.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "gpu_worker/cuda/cuda_backend.h"
#include "gpu_worker/cuda/gpu_rules.h"
#include "gpu_worker/cuda/nvml_telemetry.h"
#include "gtest/gtest.h"

namespace surplus::worker {
namespace {

using nlohmann::json;

json H100(int i) {
  return {{"name", "NVIDIA H100 80GB HBM3"},
          {"uuid", "GPU-00000000-0000-0000-0000-00000000000" + std::to_string(i)},
          {"memory_total_mib", 81559},
          {"memory_used_mib", 1024 * (i + 1)},
          {"utilization", 30 + i},
          {"temperature", 40 + i},
          {"power_mw", 300000 + i}};
}

class FakeNvmlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/fake-nvml-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_);
    state_path_ = dir_ + "/state.json";
    ::setenv("SURPLUS_FAKE_NVML_STATE", state_path_.c_str(), 1);
    state_ = {{"gpus", {H100(0), H100(1)}}};
    Write();
  }
  void TearDown() override {
    ::unsetenv("SURPLUS_FAKE_NVML_STATE");
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Replaces the state file in one rename, as a test must while NVML reads it.
  void Write() {
    const std::string tmp = state_path_ + ".tmp";
    std::ofstream(tmp) << state_.dump();
    std::filesystem::rename(tmp, state_path_);
  }

  std::unique_ptr<NvmlTelemetry> Telemetry(int interval_ms = 0) {
    NvmlTelemetryOptions o;
    o.library_path = SURPLUS_FAKE_NVML_PATH;
    o.sample_interval = std::chrono::milliseconds(interval_ms);
    auto t = NvmlTelemetry::Create(o);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *std::move(t) : nullptr;
  }

  std::unique_ptr<CudaBackend> Backend() {
    CudaBackendOptions o;
    o.nvml_library = SURPLUS_FAKE_NVML_PATH;
    o.sample_interval = std::chrono::milliseconds(0);  // sample on every call
    o.state_dir = dir_;
    o.init_cuda = false;
    auto b = CudaBackend::Create(o);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? *std::move(b) : nullptr;
  }

  // Polls `pred` for up to `ms`.
  template <typename Pred>
  static bool Eventually(Pred pred, int ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
  }

  std::string dir_, state_path_;
  json state_;
};

TEST_F(FakeNvmlTest, DiscoversGpusAndSamplesEveryFigure) {
  auto t = Telemetry();
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->device_count(), 2);
  EXPECT_EQ(t->DeviceName(1), "NVIDIA H100 80GB HBM3");
  const std::vector<GpuTelemetry> gpus = t->SampleNow();
  ASSERT_EQ(gpus.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const GpuTelemetry& g = gpus[static_cast<size_t>(i)];
    EXPECT_EQ(g.index, i);
    EXPECT_EQ(g.uuid, H100(i)["uuid"]);
    EXPECT_EQ(g.model, "H100-80GB");
    EXPECT_EQ(g.memory_total_mib, 81559);
    EXPECT_EQ(g.memory_used_mib, 1024 * (i + 1));
    EXPECT_EQ(g.utilization_pct, 30 + i);
    EXPECT_EQ(g.temperature_c, 40 + i);
    EXPECT_EQ(g.power_mw, 300000 + i);
    EXPECT_TRUE(g.healthy) << g.health_reason;
    EXPECT_FALSE(g.mig_enabled);
  }
  // Figures follow the hardware.
  state_["gpus"][0]["utilization"] = 97;
  Write();
  EXPECT_EQ(t->SampleNow()[0].utilization_pct, 97);
}

TEST_F(FakeNvmlTest, UnsupportedQueriesLeaveTheirFieldUnknownAndTheGpuHealthy) {
  state_["gpus"][0]["unsupported"] = {"utilization", "temperature", "power", "ecc", "events"};
  Write();
  auto t = Telemetry();
  ASSERT_NE(t, nullptr);
  const std::vector<GpuTelemetry> gpus = t->SampleNow();
  EXPECT_EQ(gpus[0].utilization_pct, -1);
  EXPECT_EQ(gpus[0].temperature_c, -1);
  EXPECT_EQ(gpus[0].power_mw, -1);
  EXPECT_EQ(gpus[0].memory_used_mib, 1024);
  EXPECT_TRUE(gpus[0].healthy) << gpus[0].health_reason;
  EXPECT_EQ(gpus[1].power_mw, 300001);  // the other GPU is unaffected
}

TEST_F(FakeNvmlTest, UnknownPartKeepsItsNvmlName) {
  state_["gpus"][1]["name"] = "NVIDIA GeForce RTX 4090";
  state_["gpus"][1]["memory_total_mib"] = 24564;
  Write();
  auto t = Telemetry();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->SampleNow()[1].model, "NVIDIA GeForce RTX 4090");
}

TEST_F(FakeNvmlTest, InitFailureSaysThereIsNoGpuAndWhy) {
  state_["init_error"] = 9;  // NVML_ERROR_DRIVER_NOT_LOADED
  Write();
  NvmlTelemetryOptions o;
  o.library_path = SURPLUS_FAKE_NVML_PATH;
  auto t = NvmlTelemetry::Create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StartsWith(t.status().message(), "no NVIDIA GPU: nvmlInit failed"))
      << t.status().message();
  EXPECT_NE(t.status().message().find("Driver Not Loaded"), absl::string_view::npos)
      << t.status().message();

  state_ = {{"gpus", json::array()}};
  Write();
  t = NvmlTelemetry::Create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), "no NVIDIA GPU: NVML sees 0 devices");
}

TEST_F(FakeNvmlTest, ReadsEveryProcessPastTheFirstBufferAndMergesMpsClients) {
  json procs = json::array();
  for (int pid = 1000; pid < 1045; ++pid) procs.push_back({{"pid", pid}, {"used_mib", 10}});
  state_["gpus"][0]["processes"] = procs;
  // An MPS client listed by both queries counts once.
  state_["gpus"][0]["mps_processes"] = {{{"pid", 1000}, {"used_mib", 10}},
                                        {{"pid", 2000}, {"used_mib", 4096}}};
  Write();
  auto t = Telemetry();
  ASSERT_NE(t, nullptr);
  const GpuTelemetry g = t->SampleNow()[0];
  ASSERT_EQ(g.processes.size(), 46u);
  EXPECT_EQ(g.processes.front().pid, 1000);
  EXPECT_EQ(g.processes.back().pid, 2000);
  EXPECT_EQ(g.processes.back().used_memory_mib, 4096);
  EXPECT_TRUE(t->SampleNow()[1].processes.empty());
}

TEST_F(FakeNvmlTest, OwnerWorkIsEveryProcessTheWorkerDidNotStart) {
  // The worker itself and a grandchild of it (a job's child) are tenant work; pid 1 is
  // neither.
  const pid_t job = ::fork();
  ASSERT_GE(job, 0);
  if (job == 0) {
    ::execlp("sh", "sh", "-c", "sleep 30 & wait", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int64_t grandchild = 0;
  ASSERT_TRUE(Eventually(
      [&] {
        for (const auto& e : std::filesystem::directory_iterator("/proc")) {
          int64_t pid = 0;
          if (!absl::SimpleAtoi(e.path().filename().string(), &pid)) continue;
          if (ParentPid(pid) == job) {
            grandchild = pid;
            return true;
          }
        }
        return false;
      },
      5000));
  state_["gpus"][0]["processes"] = {{{"pid", ::getpid()}, {"used_mib", 500}},
                                    {{"pid", grandchild}, {"used_mib", 2000}},
                                    {{"pid", 1}, {"used_mib", 30000}}};
  Write();
  auto b = Backend();
  ASSERT_NE(b, nullptr);
  auto gpus = b->Sample();
  ASSERT_TRUE(gpus.ok()) << gpus.status();
  std::vector<GpuProcess> owner = b->OwnerProcesses((*gpus)[0]);
  ASSERT_EQ(owner.size(), 1u);
  EXPECT_EQ(owner[0].pid, 1);
  EXPECT_EQ(owner[0].used_memory_mib, 30000);
  EXPECT_TRUE(b->OwnerProcesses((*gpus)[1]).empty());
  ::kill(job, SIGKILL);
  ::kill(static_cast<pid_t>(grandchild), SIGKILL);
  ::waitpid(job, nullptr, 0);
}

TEST_F(FakeNvmlTest, HardwareXidMarksTheGpuUnhealthyApplicationXidDoesNot) {
  state_["gpus"][0]["xids"] = {79};  // raised before the worker started: history
  Write();
  auto t = Telemetry(/*interval_ms=*/50);
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(t->Latest()[0].healthy);
  EXPECT_EQ(t->Latest()[0].last_xid, 0);

  state_["gpus"][0]["xids"] = {79, 13};  // a program's illegal access
  Write();
  ASSERT_TRUE(Eventually([&] { return t->Latest()[0].last_xid == 13; }, 3000));
  EXPECT_TRUE(t->Latest()[0].healthy) << t->Latest()[0].health_reason;

  state_["gpus"][1]["xids"] = {48};  // double-bit ECC error
  Write();
  ASSERT_TRUE(Eventually([&] { return !t->Latest()[1].healthy; }, 3000));
  EXPECT_EQ(t->Latest()[1].health_reason, "critical XID 48");
  EXPECT_EQ(t->Latest()[1].last_xid, 48);
  EXPECT_TRUE(t->Latest()[0].healthy);

  // Sticky: a later application XID does not make it healthy again.
  state_["gpus"][1]["xids"] = {48, 13};
  Write();
  ASSERT_TRUE(Eventually([&] { return t->Latest()[1].last_xid == 13; }, 3000));
  EXPECT_FALSE(t->Latest()[1].healthy);
  EXPECT_EQ(t->Latest()[1].health_reason, "critical XID 48");
}

TEST_F(FakeNvmlTest, EccErrorsAndALostGpuAreUnhealthyAndRefuseSlices) {
  auto b = Backend();
  ASSERT_NE(b, nullptr);
  state_["gpus"][0]["ecc_uncorrected"] = 2;
  state_["gpus"][1]["lost"] = true;
  Write();
  auto gpus = b->Sample();
  ASSERT_TRUE(gpus.ok());
  EXPECT_FALSE((*gpus)[0].healthy);
  EXPECT_EQ((*gpus)[0].health_reason, "2 volatile uncorrected ECC error(s)");
  EXPECT_FALSE((*gpus)[1].healthy);
  EXPECT_EQ((*gpus)[1].health_reason, "GPU fell off the bus (NVML: GPU is lost)");
  // Its static facts survive: the control plane still knows which GPU it was.
  EXPECT_EQ((*gpus)[1].uuid, H100(1)["uuid"]);

  state_["gpus"][0]["ecc_uncorrected"] = 0;
  state_["gpus"][0]["reset_required"] = true;
  Write();
  gpus = b->Sample();
  ASSERT_TRUE(gpus.ok());
  EXPECT_FALSE((*gpus)[0].healthy);
  EXPECT_EQ((*gpus)[0].health_reason, "GPU needs a reset (NVML: reset required)");

  SliceRequest r;
  r.job_id = "j";
  r.gpu_indices = {1};
  r.slice_profile = "7g.80gb";
  r.compute_units = 7;
  auto prepared = b->PrepareSlice(r);
  ASSERT_FALSE(prepared.ok());
  EXPECT_EQ(prepared.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(prepared.status().message(),
            "GPU 1 is unhealthy: GPU fell off the bus (NVML: GPU is lost)");
}

TEST_F(FakeNvmlTest, WholeGpusAreNamedByUuidForExecJobs) {
  auto b = Backend();
  ASSERT_NE(b, nullptr);
  SliceRequest r;
  r.job_id = "whole";
  r.gpu_indices = {1, 0};
  r.slice_profile = "7g.80gb";
  r.compute_units = 7;
  auto prepared = b->PrepareSlice(r);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->isolation, "none");
  EXPECT_EQ(prepared->env.at("CUDA_VISIBLE_DEVICES"),
            std::string(H100(1)["uuid"]) + "," + std::string(H100(0)["uuid"]));
  // The same GPU cannot be handed out twice.
  r.job_id = "again";
  r.gpu_indices = {0};
  auto twice = b->PrepareSlice(r);
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("overlaps the slice of job whole"), absl::string_view::npos)
      << twice.status().message();
}

TEST_F(FakeNvmlTest, MigInstancesAreTheSlicesAndGeometryIsNeverChanged) {
  state_["gpus"][0]["mig_mode"] = true;
  state_["gpus"][0]["mig"] = {
      {{"uuid", "MIG-aaaaaaaa-0000-0000-0000-000000000004"}, {"profile", "3g.40gb"}, {"gi_id", 2},
       {"start", 4}, {"size", 4}, {"processes", {{{"pid", 4242}, {"used_mib", 30000}}}}},
      {{"uuid", "MIG-aaaaaaaa-0000-0000-0000-000000000000"}, {"profile", "2g.20gb"}, {"gi_id", 3},
       {"start", 0}, {"size", 2}},
      {{"uuid", "MIG-aaaaaaaa-0000-0000-0000-000000000002"}, {"profile", "1g.10gb"}, {"gi_id", 9},
       {"start", 2}, {"size", 1}}};
  Write();
  auto b = Backend();
  ASSERT_NE(b, nullptr);
  auto gpus = b->Sample();
  ASSERT_TRUE(gpus.ok());
  const GpuTelemetry& g = (*gpus)[0];
  EXPECT_TRUE(g.mig_enabled);
  EXPECT_EQ(g.utilization_pct, -1);  // MIG GPUs do not report it
  ASSERT_EQ(g.mig_instances.size(), 3u);
  EXPECT_EQ(g.mig_instances[0].profile, "2g.20gb");
  EXPECT_EQ(g.mig_instances[0].slot_start, 0);
  EXPECT_EQ(g.mig_instances[1].profile, "1g.10gb");
  EXPECT_EQ(g.mig_instances[1].slot_start, 2);
  EXPECT_EQ(g.mig_instances[2].profile, "3g.40gb");
  EXPECT_EQ(g.mig_instances[2].slot_start, 4);
  EXPECT_FALSE((*gpus)[1].mig_enabled);
  // The owner's process on an instance is seen through the instance's own handle (the
  // GPU's handle lists nothing without privileges).
  ASSERT_EQ(g.processes.size(), 1u);
  EXPECT_EQ(g.processes[0].pid, 4242);
  EXPECT_EQ(g.processes[0].used_memory_mib, 30000);

  auto slice = [](const std::string& job, const std::string& profile, int start, int units) {
    SliceRequest r;
    r.job_id = job;
    r.gpu_indices = {0};
    r.slice_profile = profile;
    r.slot_start = start;
    r.compute_units = units;
    return r;
  };
  auto prepared = b->PrepareSlice(slice("a", "3g.40gb", 4, 3));
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->isolation, "mig");
  EXPECT_EQ(prepared->env.at("CUDA_VISIBLE_DEVICES"), "MIG-aaaaaaaa-0000-0000-0000-000000000004");
  // A valid H100 placement that is not one of the GPU's instances is refused, not created.
  auto absent = b->PrepareSlice(slice("b", "1g.10gb", 3, 1));
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(absent.status().message().find("does not change MIG geometry"), absl::string_view::npos)
      << absent.status().message();
  // Built-in workloads need green contexts, which MIG GPUs do not offer.
  SliceRequest builtin = slice("c", "1g.10gb", 2, 1);
  builtin.exec = false;
  EXPECT_EQ(b->PrepareSlice(builtin).status().code(), absl::StatusCode::kUnimplemented);
}

TEST_F(FakeNvmlTest, ALostGpuDoesNotSpinTheSampler) {
  auto t = Telemetry(/*interval_ms=*/50);
  ASSERT_NE(t, nullptr);
  state_["gpus"][1]["lost"] = true;  // its event wait now fails at once
  Write();
  ASSERT_TRUE(Eventually([&] { return !t->Latest()[1].healthy; }, 3000));
  timespec before{}, after{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &before);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &after);
  const double cpu_s = static_cast<double>(after.tv_sec - before.tv_sec) +
                       static_cast<double>(after.tv_nsec - before.tv_nsec) / 1e9;
  // 20 samples of 2 GPUs cost milliseconds; a sampler retrying the wait burns the second.
  EXPECT_LT(cpu_s, 0.25);
  EXPECT_FALSE(t->Latest()[1].healthy);
  EXPECT_TRUE(t->Latest()[0].healthy);
}

TEST_F(FakeNvmlTest, AMigInstanceOfUnknownPlacementIsNeverHandedOut) {
  // Two 3g instances; NVML will not tell where the one at slot 0 is (its GPU instance
  // lookup needs privileges), so it sorts first with placement -1.
  state_["gpus"][0]["mig_mode"] = true;
  state_["gpus"][0]["mig"] = {
      {{"uuid", "MIG-bbbbbbbb-0000-0000-0000-000000000004"}, {"profile", "3g.40gb"}, {"gi_id", 2},
       {"start", 4}, {"size", 4}},
      {{"uuid", "MIG-bbbbbbbb-0000-0000-0000-000000000000"}, {"profile", "3g.40gb"}, {"gi_id", 1},
       {"start", 0}, {"size", 4}, {"placement_hidden", true}}};
  Write();
  auto b = Backend();
  ASSERT_NE(b, nullptr);
  auto gpus = b->Sample();
  ASSERT_TRUE(gpus.ok());
  ASSERT_EQ((*gpus)[0].mig_instances.size(), 2u);
  EXPECT_EQ((*gpus)[0].mig_instances[0].slot_start, -1);
  EXPECT_EQ((*gpus)[0].mig_instances[1].slot_start, 4);
  SliceRequest r;
  r.job_id = "at4";
  r.gpu_indices = {0};
  r.slice_profile = "3g.40gb";
  r.slot_start = 4;
  r.compute_units = 3;
  auto prepared = b->PrepareSlice(r);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->env.at("CUDA_VISIBLE_DEVICES"), "MIG-bbbbbbbb-0000-0000-0000-000000000004");
  // Slot 0 is that hidden instance's real place, but nothing says so: refused.
  r.job_id = "at0";
  r.slot_start = 0;
  EXPECT_EQ(b->PrepareSlice(r).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(FakeNvmlTest, SamplerKeepsItsRate) {
  auto t = Telemetry(/*interval_ms=*/100);
  ASSERT_NE(t, nullptr);
  const uint64_t before = t->samples_taken();
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  const uint64_t taken = t->samples_taken() - before;
  // 10 at 10 Hz; loose bounds for a loaded machine, but neither stalled nor spinning.
  EXPECT_GE(taken, 5u);
  EXPECT_LE(taken, 12u);
}

}  // namespace
}  // namespace surplus::worker
