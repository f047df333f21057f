// CPU-only tests of the CUDA backend: everything that needs no GPU (label unit).

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "gpu_worker/cuda/cuda_backend.h"
#include "gpu_worker/cuda/gpu_rules.h"
#include "gpu_worker/cuda/mps_daemon.h"
#include "gpu_worker/cuda/nvml_api.h"
#include "gtest/gtest.h"
#include "surplus/gpu_models.h"

namespace surplus::worker {
namespace {

constexpr char kNoNvml[] = "libsurplus-test-absent-nvml.so.1";

TEST(NvmlAbsent, LoadSaysNoGpuAndWhy) {
  auto lib = NvmlLibrary::Load(kNoNvml);
  ASSERT_FALSE(lib.ok());
  EXPECT_EQ(lib.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StartsWith(lib.status().message(), "no NVIDIA GPU:"))
      << lib.status().message();
  EXPECT_NE(lib.status().message().find(kNoNvml), absl::string_view::npos);
}

TEST(NvmlAbsent, BackendCreationFailsCleanly) {
  CudaBackendOptions options;
  options.nvml_library = kNoNvml;
  auto backend = MakeCudaBackend(options);
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StartsWith(backend.status().message(), "no NVIDIA GPU:"));
}

TEST(ModelName, MapsNvmlNamesToModelTable) {
  struct Case {
    const char* nvml_name;
    int64_t memory_mib;
    const char* want;
  };
  const Case cases[] = {
      {"NVIDIA H100 80GB HBM3", 81559, "H100-80GB"},
      {"NVIDIA H100 80GB HBM3", 79000, "H100-80GB"},  // within 5 % of 81559
      {"NVIDIA H100 PCIe", 81559, ""},                // 114 SMs, not the table's 132
      {"NVIDIA H100 NVL", 95830, ""},                 // 94 GB: memory does not match
      {"NVIDIA H200", 143771, "H200-141GB"},
      {"NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"},
      {"NVIDIA A100 80GB PCIe", 81920, "A100-80GB"},
      {"NVIDIA A100-SXM4-40GB", 40960, ""},
      {"NVIDIA GeForce RTX 4090", 24564, ""},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(ModelNameForDevice(c.nvml_name, c.memory_mib), c.want)
        << c.nvml_name << " " << c.memory_mib;
  }
}

TEST(MigProfile, FromDeviceName) {
  EXPECT_EQ(MigProfileFromDeviceName("NVIDIA H100 80GB HBM3 MIG 1g.10gb"), "1g.10gb");
  EXPECT_EQ(MigProfileFromDeviceName("NVIDIA A100-SXM4-80GB MIG 3g.40gb"), "3g.40gb");
  EXPECT_EQ(MigProfileFromDeviceName("NVIDIA H100 80GB HBM3 MIG 1g.10gb+me"), "1g.10gb+me");
  EXPECT_EQ(MigProfileFromDeviceName("NVIDIA H100 80GB HBM3"), "");
}

TEST(Health, XidClassesAndReasons) {
  for (int xid : {13, 31, 43, 45, 68, 109}) EXPECT_TRUE(IsApplicationXid(xid)) << xid;
  for (int xid : {48, 63, 64, 74, 79, 92, 94, 95}) EXPECT_FALSE(IsApplicationXid(xid)) << xid;

  GpuTelemetry g;
  ApplyHealth({}, &g);
  EXPECT_TRUE(g.healthy);
  EXPECT_EQ(g.health_reason, "");

  ApplyHealth({/*lost=*/true, 0, 0}, &g);
  EXPECT_FALSE(g.healthy);
  EXPECT_NE(g.health_reason.find("fell off the bus"), std::string::npos);

  ApplyHealth({false, /*ecc=*/2, /*xid=*/79}, &g);
  EXPECT_FALSE(g.healthy);
  EXPECT_EQ(g.health_reason, "critical XID 79; 2 volatile uncorrected ECC error(s)");
}

TEST(Uuid, FormatsLikeNvml) {
  const unsigned char b[16] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
                               0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
  EXPECT_EQ(FormatGpuUuid(b), "GPU-12345678-9abc-def0-0123-456789abcdef");
}

TEST(Mps, ActiveThreadPercentageIsUnitsOfSeven) {
  // round(100 * cu / 7): 14.3 -> 14, 28.6 -> 29, 42.9 -> 43, 57.1 -> 57, 100.
  const int want[] = {0, 14, 29, 43, 57, 71, 86, 100};
  for (int cu = 1; cu <= 7; ++cu) EXPECT_EQ(MpsActiveThreadPercentage(cu), want[cu]) << cu;
}

TEST(Mps, ClientEnvironmentMatchesSlice) {
  auto env = MpsClientEnv("GPU-abc", "/state/mps/0/pipe", "/state/mps/0/log", 3, 40192);
  EXPECT_EQ(env.at("CUDA_VISIBLE_DEVICES"), "GPU-abc");
  EXPECT_EQ(env.at("CUDA_MPS_PIPE_DIRECTORY"), "/state/mps/0/pipe");
  EXPECT_EQ(env.at("CUDA_MPS_LOG_DIRECTORY"), "/state/mps/0/log");
  EXPECT_EQ(env.at("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), "43");
  EXPECT_EQ(env.at("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"), "0=40192M");
}

TEST(Mps, MissingControlBinaryIsAClearError) {
  const std::string dir = ::testing::TempDir() + "/surplus-mps-absent";
  MpsDaemonOptions o;
  o.control_binary = "/nonexistent/nvidia-cuda-mps-control";
  o.gpu_uuid = "GPU-abc";
  o.pipe_dir = dir + "/pipe";
  o.log_dir = dir + "/log";
  auto daemon = MpsDaemon::Start(o);
  ASSERT_FALSE(daemon.ok());
  EXPECT_EQ(daemon.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(daemon.status().message().find("MPS control daemon did not start"),
            absl::string_view::npos);
}

TEST(RunProcess, PassesStdinAndEnvironment) {
  auto echoed = RunProcess({"cat"}, {}, "quit\n");
  ASSERT_TRUE(echoed.ok()) << echoed.status();
  EXPECT_EQ(*echoed, "quit\n");
  auto env = RunProcess({"sh", "-c", "echo $SURPLUS_TEST_VAR"}, {{"SURPLUS_TEST_VAR", "x1"}}, "");
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(*env, "x1\n");
  EXPECT_FALSE(RunProcess({"sh", "-c", "exit 3"}, {}, "").ok());
}

// The H100 split as the driver makes it with co-scheduling respected: 15 groups of 8
// SMs and 12 left over.
constexpr SmSplit kH100Split{15, 8, 12};

TEST(GreenPlan, H100SlicesGetTheirSms) {
  struct Case {
    int start, slots, sms;
    int want_first, want_groups, want_sms;
    bool want_remaining;
  };
  const Case cases[] = {
      // 15 / 7 = 2 groups per slot 0..6 (slot s owns [2s, 2s+2)); slot 7 owns group 14
      // and the 12 remaining SMs.
      {0, 1, 16, 0, 2, 16, false},   // 1g.10gb at 0
      {6, 1, 16, 12, 2, 16, false},  // 1g.10gb at 6
      {6, 2, 16, 12, 2, 16, false},  // 1g.20gb at 6: 2 of its 3 groups
      {4, 2, 32, 8, 4, 32, false},   // 2g.20gb at 4
      {0, 4, 60, 0, 8, 64, false},   // 3g.40gb at 0: 60 rounds up to 8 groups = 64
      {4, 4, 60, 8, 7, 68, true},    // 3g.40gb at 4: 7 groups = 56 < 60, + remainder 12
      {0, 4, 64, 0, 8, 64, false},   // 4g.40gb
  };
  for (const Case& c : cases) {
    auto plan = PlanGreenSlice(kH100Split, c.start, c.slots, c.sms, false);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->first_group, c.want_first) << c.start << "+" << c.slots;
    EXPECT_EQ(plan->group_count, c.want_groups) << c.start << "+" << c.slots;
    EXPECT_EQ(plan->sm_count, c.want_sms) << c.start << "+" << c.slots;
    EXPECT_EQ(plan->include_remaining, c.want_remaining) << c.start << "+" << c.slots;
  }
  auto whole = PlanGreenSlice(kH100Split, 0, 8, 132, true);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->sm_count, 132);  // 15 * 8 + 12
  EXPECT_TRUE(whole->include_remaining);
}

TEST(GreenPlan, EveryH100ProfileGetsAtLeastItsSmsWithFineSplits) {
  const GpuModel* h100 = FindGpuModel("H100-80GB");
  ASSERT_NE(h100, nullptr);
  for (SmSplit split : {kH100Split, SmSplit{16, 8, 4}, SmSplit{66, 2, 0}}) {
    for (const SliceProfile& p : h100->profiles) {
      for (int s : p.starts) {
        auto plan = PlanGreenSlice(split, s, p.memory_slots, p.sm_count, p.IsWholeGpu());
        ASSERT_TRUE(plan.ok()) << p.name << "@" << s;
        EXPECT_GE(plan->sm_count, p.sm_count) << p.name << "@" << s << " of " << split.groups;
      }
    }
  }
}

TEST(GreenPlan, NonOverlappingPlacementsGetDisjointSms) {
  // Every pair of H100 placements whose memory slots do not overlap must get disjoint
  // SM groups (and not both the remainder), for the driver's split and others.
  const GpuModel* h100 = FindGpuModel("H100-80GB");
  ASSERT_NE(h100, nullptr);
  struct Placement {
    const SliceProfile* p;
    int start;
  };
  std::vector<Placement> all;
  for (const SliceProfile& p : h100->profiles) {
    if (p.IsWholeGpu()) continue;
    for (int s : p.starts) all.push_back({&p, s});
  }
  for (SmSplit split : {kH100Split, SmSplit{16, 8, 4}, SmSplit{66, 2, 0}, SmSplit{7, 16, 20}}) {
    for (const Placement& a : all) {
      for (const Placement& b : all) {
        if ((a.p->MaskAt(a.start) & b.p->MaskAt(b.start)) != 0) continue;
        auto pa = PlanGreenSlice(split, a.start, a.p->memory_slots, a.p->sm_count, false);
        auto pb = PlanGreenSlice(split, b.start, b.p->memory_slots, b.p->sm_count, false);
        ASSERT_TRUE(pa.ok() && pb.ok()) << a.p->name << "@" << a.start;
        const bool disjoint = pa->first_group + pa->group_count <= pb->first_group ||
                              pb->first_group + pb->group_count <= pa->first_group;
        EXPECT_TRUE(disjoint) << a.p->name << "@" << a.start << " vs " << b.p->name << "@"
                              << b.start << " with " << split.groups << " groups";
        EXPECT_FALSE(pa->include_remaining && pb->include_remaining);
      }
    }
  }
}

TEST(GreenPlan, RejectsBadPlacements) {
  EXPECT_FALSE(PlanGreenSlice(kH100Split, 6, 4, 60, false).ok());  // past slot 8
  EXPECT_FALSE(PlanGreenSlice(SmSplit{}, 0, 1, 16, false).ok());
}

TEST(GreenPlan, ASplitTooCoarseForTheSliceIsAnErrorNotFewerSms) {
  // 10 groups of 8: one group per slot, so a 1g slice would get 8 of its 16 SMs.
  auto plan = PlanGreenSlice(SmSplit{10, 8, 52}, 0, 1, 16, false);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(plan.status().message(),
            "GPU split into 10 groups of 8 SMs gives the 1-slot slice at slot 0 only 8 of its 16 SMs");
}

TEST(SliceMaskTest, UsesPlacementTable) {
  SliceRequest r;
  r.slice_profile = "3g.40gb";
  r.slot_start = 4;
  auto m = SliceMask("H100-80GB", r);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(*m, 0xF0);
  r.slot_start = 2;  // a 3g may start only at 0 or 4
  EXPECT_EQ(SliceMask("H100-80GB", r).status().code(), absl::StatusCode::kInvalidArgument);
  r.slice_profile = "7g.80gb";
  r.slot_start = 0;
  EXPECT_EQ(*SliceMask("H100-80GB", r), 0xFF);
  EXPECT_EQ(SliceMask("NVIDIA GeForce RTX 4090", r).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(Processes, OwnerWorkIsWhatTheWorkerDidNotStart) {
  const std::set<int64_t> worker = {100, 101};
  std::vector<GpuProcess> seen = {{100, 500}, {200, 30000}, {101, 700}, {300, 10}};
  auto owner = OwnerProcesses(seen, [&](int64_t pid) { return worker.count(pid) != 0; });
  ASSERT_EQ(owner.size(), 2u);
  EXPECT_EQ(owner[0].pid, 200);
  EXPECT_EQ(owner[1].pid, 300);
}

TEST(Processes, ParentPidParsesProcStat) {
  EXPECT_EQ(ParentPid(::getpid()), static_cast<int64_t>(::getppid()));
  const std::string root = ::testing::TempDir() + "/surplus-fake-proc";
  std::filesystem::create_directories(root + "/123");
  std::ofstream(root + "/123/stat") << "123 (my (odd) name) S 45 123 123 0 -1 4194560\n";
  EXPECT_EQ(ParentPid(123, root), 45);
  EXPECT_FALSE(ParentPid(124, root).has_value());
}

}  // namespace
}  // namespace surplus::worker
