// surplus-bench's interface, which scripts compare runs with: the subcommands that need no
// services run on a small trace-format input (tests/unit/bench_data) and report, in one
// JSON object, figures that agree with each other; bad input gets a clear error.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace {

using nlohmann::json;

struct BenchRun {
  int status = -1;  // exit status
  std::string out;  // stdout and stderr
};

BenchRun RunBench(const std::string& args) {
  const std::string cmd = std::string(SURPLUS_BENCH_PATH) + " " + args + " 2>&1";
  BenchRun r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int rc = pclose(p);
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return r;
}

// The JSON object a --json run prints on its last line.
json RunJson(const std::string& args) {
  const BenchRun r = RunBench(args + " --json");
  EXPECT_EQ(r.status, 0) << args << "\n" << r.out;
  std::string last = r.out;
  while (!last.empty() && last.back() == '\n') last.pop_back();
  last = last.substr(last.rfind('\n') == std::string::npos ? 0 : last.rfind('\n') + 1);
  json j = json::parse(last, nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(j.is_object()) << args << "\n" << r.out;
  return j;
}

const std::string kData = SURPLUS_BENCH_DATA;
const std::string kTrace = " --nodes " + kData + "/nodes.csv --pods " + kData + "/pods.csv";

// Pods of the list that ask for GPUs, and those that do not.
std::pair<int, int> CountPods() {
  std::ifstream in(kData + "/pods.csv");
  std::string line;
  std::getline(in, line);  // header; num_gpu is the fourth column
  int gpu = 0, cpu_only = 0;
  while (std::getline(in, line)) {
    size_t at = 0;
    for (int i = 0; i < 3; ++i) at = line.find(',', at) + 1;
    (std::stoi(line.substr(at)) > 0 ? gpu : cpu_only)++;
  }
  return {gpu, cpu_only};
}

double LessUnallocated(double ours, double base) { return 1 - (1 - ours) / (1 - base); }

TEST(BenchPack, ReportsEveryPolicyAndTheGainsAgree) {
  const json j = RunJson("pack" + kTrace);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("bench", ""), "pack");
  EXPECT_EQ(j.value("model", ""), "gpu+cpu+memory");
  EXPECT_EQ(j.value("gpus", 0), 48);       // six 8-GPU nodes; the CPU-only node adds none
  EXPECT_EQ(j.value("gpu_nodes", 0), 7);   // every node of the list is read
  const auto [gpu_pods, cpu_only] = CountPods();
  EXPECT_EQ(j.value("gpu_pods", 0), gpu_pods);
  EXPECT_EQ(j.value("cpu_only_pods_skipped", 0), cpu_only);
  for (const json* model : {&j, &j["gpu_only"]}) {
    for (const char* policy : {"surplus", "first-fit", "best-fit"}) {
      SCOPED_TRACE(policy);
      ASSERT_TRUE((*model)[policy].is_object());
      const double first = (*model)[policy].value("alloc_ratio_at_first_failure", -1.0);
      const double five = (*model)[policy].value("alloc_ratio_at_5pct_failed", -1.0);
      EXPECT_GT(first, 0.5);
      EXPECT_LE(first, five);  // pods only arrive: the allocation never falls
      EXPECT_LE(five, 1.0);
      // 5 % of the GPU pods, rounded up, have failed when the replay stops.
      EXPECT_EQ((*model)[policy].value("pods_failed", 0), (gpu_pods * 5 + 99) / 100);
    }
    const json& s = (*model)["surplus"];
    const json& b = (*model)["best-fit"];
    // The figures are printed to 6 significant digits, so they agree to about that.
    auto agree = [](double reported, double computed) {
      EXPECT_NEAR(reported, computed, 1e-3 * (1 + std::fabs(computed)));
    };
    agree(model->value("less_unallocated_than_best_fit_at_first_failure", 0.0),
          LessUnallocated(s["alloc_ratio_at_first_failure"], b["alloc_ratio_at_first_failure"]));
    agree(model->value("less_unallocated_than_best_fit_at_5pct_failed", 0.0),
          LessUnallocated(s["alloc_ratio_at_5pct_failed"], b["alloc_ratio_at_5pct_failed"]));
  }
  // On this small fleet, where 8-GPU pods need whole nodes, surplus must not fail before
  // best-fit does. (Crediting fragments for multi-GPU jobs once made it fail at 82 %.)
  EXPECT_GE(j["surplus"].value("alloc_ratio_at_first_failure", 0.0),
            j["best-fit"].value("alloc_ratio_at_first_failure", 1.0));
  // The bound holds for every policy: none is allocated past it at its first failure.
  const double bound = j.value("gpu_only_alloc_ratio_bound_at_first_failure", 0.0);
  for (const char* policy : {"surplus", "first-fit", "best-fit"}) {
    EXPECT_LE(j["gpu_only"][policy].value("alloc_ratio_at_first_failure", 2.0), bound + 1e-6) << policy;
  }
}

TEST(BenchPack, TableNamesThePoliciesAndBadInputSaysWhatIsWrong) {
  const BenchRun table = RunBench("pack" + kTrace);
  EXPECT_EQ(table.status, 0) << table.out;
  for (const char* word : {"surplus", "first-fit", "best-fit", "alloc at first failure", "GPUs only"}) {
    EXPECT_NE(table.out.find(word), std::string::npos) << word << "\n" << table.out;
  }
  const BenchRun missing = RunBench("pack --nodes " + kData + "/no-such-file.csv --pods " + kData + "/pods.csv");
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.out.find("no-such-file.csv"), std::string::npos) << missing.out;
  const BenchRun usage = RunBench("pack --nodes " + kData + "/nodes.csv");
  EXPECT_EQ(usage.status, 2);
  EXPECT_NE(usage.out.find("usage: surplus-bench pack"), std::string::npos) << usage.out;
}

TEST(BenchHarvest, UnsoldTimeIsAccountedForAndReclaimsKeepTheNotice) {
  const json j = RunJson("harvest" + kTrace);
  ASSERT_TRUE(j.is_object());
  EXPECT_GT(j.value("owner_idle_gpu_hours", 0.0), 0);
  EXPECT_GT(j.value("sold_gpu_hours", 0.0), 0);
  const double sum = j.value("sold_share_of_owner_idle", 0.0) + j.value("unsold_in_idle_window_share", 0.0) +
                     j.value("unsold_offered_empty_share", 0.0) + j.value("unsold_offered_beside_slices_share", 0.0);
  EXPECT_NEAR(sum, 1.0, 1e-4) << j.dump();
  EXPECT_GT(j.value("reclaims", 0), 0);
  EXPECT_TRUE(j.value("within_notice", false));
  EXPECT_LE(j.value("reclaim_to_free_max_s", 1e9), j.value("notice_s", 0));
}

TEST(BenchSched, FullAndSteadyRoundsPlaceJobs) {
  const json j = RunJson("sched --nodes 20 --jobs 200 --rounds 3");
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("gpus", 0), 160);
  EXPECT_GT(j.value("placements", 0), 0);
  EXPECT_GT(j.value("full_round_ms", 0.0), 0);
  EXPECT_EQ(j.value("steady_rounds", 0), 3);
  EXPECT_LE(j.value("units_allocated_ratio", 2.0), 1.0);
  ASSERT_TRUE(j["first_fit"].is_object());  // the baseline runs in the same process
  EXPECT_GT(j["first_fit"].value("placements", 0), 0);
}

}  // namespace
