// Local validation of `surplus` flags: durations, prices, shapes, specs, exit codes.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "src/cli/commands.h"
#include "src/cli/exit_codes.h"
#include "src/cli/parse.h"

namespace surplus::cli {
namespace {

TEST(ParseDurationMs, AcceptsUnitsAndSequences) {
  struct Case {
    const char* text;
    int64_t ms;
  };
  const Case cases[] = {
      {"10s", 10'000},
      {"30m", 1'800'000},
      {"1h30m", 5'400'000},  // 3'600'000 + 1'800'000
      {"500ms", 500},
      {"1m500ms", 60'500},
      {"2d", 172'800'000},
      {"45", 45'000},  // bare number = seconds
      {"0s", 0},
  };
  for (const Case& c : cases) {
    auto ms = ParseDurationMs(c.text);
    ASSERT_TRUE(ms.ok()) << c.text << ": " << ms.status();
    EXPECT_EQ(*ms, c.ms) << c.text;
  }
}

TEST(ParseDurationMs, RejectsMalformed) {
  for (const char* text : {"", "s", "10x", "1.5h", "-5s", "10 s", "h1", "99999999999999999999s"}) {
    EXPECT_FALSE(ParseDurationMs(text).ok()) << text;
  }
}

TEST(ParsePriceMicros, ExactMicroDollars) {
  struct Case {
    const char* text;
    Micros micros;
  };
  const Case cases[] = {
      {"2.10", 2'100'000}, {"$2.10", 2'100'000}, {"2", 2'000'000},
      {"0.000001", 1},     {"1.5", 1'500'000},   {"100000", 100'000'000'000},
  };
  for (const Case& c : cases) {
    auto micros = ParsePriceMicros(c.text);
    ASSERT_TRUE(micros.ok()) << c.text << ": " << micros.status();
    EXPECT_EQ(*micros, c.micros) << c.text;
  }
  // 7 decimals, negative, exponent, garbage, above the $100,000 cap.
  for (const char* text : {"0.0000001", "-1", "1e3", "abc", "", "100000.01", "2,10"}) {
    EXPECT_FALSE(ParsePriceMicros(text).ok()) << text;
  }
}

TEST(ParseTier, Names) {
  EXPECT_EQ(*ParseTier("spot"), Tier::kSpot);
  EXPECT_EQ(*ParseTier("On-Demand"), Tier::kOnDemand);
  EXPECT_EQ(*ParseTier("on_demand"), Tier::kOnDemand);
  EXPECT_FALSE(ParseTier("reserved").ok());
  EXPECT_FALSE(ParseTier("").ok());
}

TEST(ParseGang, KxN) {
  auto g = ParseGang("2x8");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->nodes, 2);
  EXPECT_EQ(g->gpus_per_node, 8);
  EXPECT_TRUE(ParseGang("4X1").ok());
  for (const char* text : {"2", "x8", "2x", "0x8", "2x0", "-1x2", "2x8x1", "axb"}) {
    EXPECT_FALSE(ParseGang(text).ok()) << text;
  }
}

TEST(ParseKeyValue, SplitsAtFirstEquals) {
  auto kv = ParseKeyValue("A=b=c");
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->first, "A");
  EXPECT_EQ(kv->second, "b=c");
  EXPECT_EQ(ParseKeyValue("EMPTY=")->second, "");
  EXPECT_FALSE(ParseKeyValue("=x").ok());
  EXPECT_FALSE(ParseKeyValue("novalue").ok());
}

TEST(ParseIndexList, DistinctIndices) {
  EXPECT_EQ(*ParseIndexList("0,1,3"), (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(*ParseIndexList("7"), (std::vector<int>{7}));
  for (const char* text : {"", "0,,1", "0,0", "-1", "a", "1024"}) {
    EXPECT_FALSE(ParseIndexList(text).ok()) << text;
  }
}

TEST(ValidatePeriod, YearDashMonth) {
  EXPECT_TRUE(ValidatePeriod("2025-03").ok());
  EXPECT_TRUE(ValidatePeriod("1999-12").ok());
  for (const char* text : {"2025-13", "2025-00", "2025-3", "25-03", "2025/03", "2025-03-01", ""}) {
    EXPECT_FALSE(ValidatePeriod(text).ok()) << text;
  }
}

TEST(ValidateTenantId, ServerRule) {
  EXPECT_TRUE(ValidateTenantId("acme").ok());
  EXPECT_TRUE(ValidateTenantId("a-1").ok());
  EXPECT_TRUE(ValidateTenantId(std::string(63, 'a')).ok());
  for (const std::string& text :
       {std::string(""), std::string("1abc"), std::string("Acme"), std::string("a_b"),
        std::string(64, 'a'), std::string("-a")}) {
    EXPECT_FALSE(ValidateTenantId(text).ok()) << text;
  }
}

SubmitOptions ValidSubmit() {
  SubmitOptions o;
  o.shape.gpus = "1";
  o.bid = "2.10";
  o.argv = {"python", "train.py"};
  return o;
}

TEST(BuildJobSpec, ValidSpotExec) {
  SubmitOptions o = ValidSubmit();
  o.max_runtime = "90500ms";  // rounds up to 91 s: never less than asked for
  o.model = "h100";
  o.env = {"A=1", "B=x=y"};
  o.request_id = "r-1";
  o.requeue = true;
  auto spec = BuildJobSpec(o);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->shape().whole_gpus().count(), 1);
  EXPECT_EQ(spec->tier(), v1::TIER_SPOT);
  EXPECT_EQ(spec->bid_micros_per_gpu_hour(), 2'100'000);
  EXPECT_EQ(spec->max_runtime_seconds(), 91);
  EXPECT_EQ(spec->gpu_model(), "H100-80GB");
  EXPECT_EQ(spec->request_id(), "r-1");
  EXPECT_TRUE(spec->requeue());
  ASSERT_EQ(spec->workload().exec().argv_size(), 2);
  EXPECT_EQ(spec->workload().exec().env().at("B"), "x=y");
}

TEST(BuildJobSpec, BuiltinOnDemandSlice) {
  SubmitOptions o;
  o.shape.slice = "1g.10gb";
  o.tier = "on-demand";
  o.builtin = "gemm";
  o.duration = "10s";
  o.params = {"n=4096"};
  auto spec = BuildJobSpec(o);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->shape().slice_profile(), "1g.10gb");
  EXPECT_EQ(spec->tier(), v1::TIER_ON_DEMAND);
  EXPECT_EQ(spec->bid_micros_per_gpu_hour(), 0);
  EXPECT_EQ(spec->workload().builtin().kind(), v1::BUILTIN_KIND_GEMM);
  EXPECT_EQ(spec->workload().builtin().duration_ms(), 10'000);
  EXPECT_EQ(spec->workload().builtin().params().at("n"), "4096");
}

TEST(BuildJobSpec, GangShape) {
  SubmitOptions o = ValidSubmit();
  o.shape.gpus.clear();
  o.shape.gang = "2x8";
  auto spec = BuildJobSpec(o);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->shape().gang().nodes(), 2);
  EXPECT_EQ(spec->shape().gang().gpus_per_node(), 8);
}

TEST(ParseHostResources, CpusAndMemory) {
  EXPECT_EQ(*ParseCpuMillis("4"), 4000);
  EXPECT_EQ(*ParseCpuMillis("0.5"), 500);
  EXPECT_EQ(*ParseCpuMillis("1.25"), 1250);
  EXPECT_EQ(*ParseCpuMillis("250m"), 250);
  for (const char* bad : {"", "0", "-1", "1.2345", "1.", ".5", "4 CPUs", "5000", "m", "1e3"}) {
    EXPECT_FALSE(ParseCpuMillis(bad).ok()) << bad;
  }
  EXPECT_EQ(*ParseMemoryMib("512"), 512);
  EXPECT_EQ(*ParseMemoryMib("512Mi"), 512);
  EXPECT_EQ(*ParseMemoryMib("64Gi"), 65536);
  EXPECT_EQ(*ParseMemoryMib("64GiB"), 65536);
  EXPECT_EQ(*ParseMemoryMib("1Ti"), 1048576);
  for (const char* bad : {"", "0", "-5Gi", "64GB", "1.5Gi", "Gi", "65Ti"}) {
    EXPECT_FALSE(ParseMemoryMib(bad).ok()) << bad;
  }
}

TEST(BuildJobSpec, HostResourcesPerNode) {
  SubmitOptions o = ValidSubmit();
  o.shape.cpus = "12";
  o.shape.memory = "96Gi";
  auto spec = BuildJobSpec(o);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->shape().cpu_millis(), 12000);
  EXPECT_EQ(spec->shape().memory_mib(), 98304);
}

TEST(BuildJobSpec, ErrorsNameTheFlag) {
  struct Case {
    const char* what;
    void (*edit)(SubmitOptions&);
    const char* flag;  // the message starts with it
  };
  const Case cases[] = {
      {"bad bid", [](SubmitOptions& o) { o.bid = "2.1.0"; }, "--bid"},
      {"spot without bid", [](SubmitOptions& o) { o.bid.clear(); }, "--bid"},
      {"zero bid", [](SubmitOptions& o) { o.bid = "0"; }, "--bid"},
      {"unknown tier", [](SubmitOptions& o) { o.tier = "cheap"; }, "--tier"},
      {"bad runtime", [](SubmitOptions& o) { o.max_runtime = "soon"; }, "--max-runtime"},
      {"bad gpus", [](SubmitOptions& o) { o.shape.gpus = "two"; }, "--gpus"},
      {"zero gpus", [](SubmitOptions& o) { o.shape.gpus = "0"; }, "--gpus"},
      {"bad gang", [](SubmitOptions& o) { o.shape = {"", "", "2by8", "", ""}; }, "--gang"},
      {"bad slice", [](SubmitOptions& o) { o.shape = {"9g.90gb", "", "", "", ""}; }, "--slice"},
      {"bad cpus", [](SubmitOptions& o) { o.shape.cpus = "four"; }, "--cpus"},
      {"zero cpus", [](SubmitOptions& o) { o.shape.cpus = "0"; }, "--cpus"},
      {"bad memory unit", [](SubmitOptions& o) { o.shape.memory = "64GB"; }, "--memory"},
      {"fractional memory", [](SubmitOptions& o) { o.shape.memory = "1.5Gi"; }, "--memory"},
      {"two shapes", [](SubmitOptions& o) { o.shape.slice = "1g.10gb"; }, "--slice"},
      {"bad env", [](SubmitOptions& o) { o.env = {"NOEQUALS"}; }, "--env"},
      {"builtin and argv", [](SubmitOptions& o) { o.builtin = "sleep"; }, "--builtin"},
      {"unknown builtin",
       [](SubmitOptions& o) {
         o.argv.clear();
         o.builtin = "train";
         o.duration = "1s";
       },
       "--builtin"},
      {"builtin without duration",
       [](SubmitOptions& o) {
         o.argv.clear();
         o.builtin = "sleep";
       },
       "--duration"},
      {"param on exec", [](SubmitOptions& o) { o.params = {"a=b"}; }, "--param"},
  };
  for (const Case& c : cases) {
    SubmitOptions o = ValidSubmit();
    c.edit(o);
    auto spec = BuildJobSpec(o);
    ASSERT_FALSE(spec.ok()) << c.what;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_EQ(spec.status().message().substr(0, std::string(c.flag).size()), c.flag)
        << c.what << ": " << spec.status().message();
  }
  SubmitOptions none = ValidSubmit();
  none.shape = {};
  EXPECT_FALSE(BuildJobSpec(none).ok());
  SubmitOptions no_workload = ValidSubmit();
  no_workload.argv.clear();
  EXPECT_FALSE(BuildJobSpec(no_workload).ok());
}

TEST(ParseJobStates, CommaListsAndPrefixes) {
  auto states = ParseJobStates({"running,Pending", "JOB_STATE_LOST"});
  ASSERT_TRUE(states.ok());
  EXPECT_EQ(*states, (std::vector<v1::JobState>{v1::JOB_STATE_RUNNING, v1::JOB_STATE_PENDING,
                                                 v1::JOB_STATE_LOST}));
  EXPECT_FALSE(ParseJobStates({"sleeping"}).ok());
  EXPECT_FALSE(ParseJobStates({"unspecified"}).ok());
}

TEST(ExitCodeFor, MapsCanonicalCodes) {
  struct Case {
    absl::Status status;
    int code;
  };
  const Case cases[] = {
      {absl::OkStatus(), 0},
      {absl::UnknownError("x"), 1},
      {absl::AlreadyExistsError("x"), 1},
      {absl::FailedPreconditionError("x"), 1},
      {absl::ResourceExhaustedError("x"), 1},
      {UsageError("x"), 2},
      {absl::NotFoundError("x"), 3},
      {absl::UnauthenticatedError("x"), 4},
      {absl::PermissionDeniedError("x"), 4},
      {absl::InvalidArgumentError("x"), 5},  // from the server: not a usage error
      {absl::OutOfRangeError("x"), 5},
      {absl::UnavailableError("x"), 6},
      {absl::DeadlineExceededError("x"), 6},
  };
  for (const Case& c : cases) EXPECT_EQ(ExitCodeFor(c.status), c.code) << c.status;
}

TEST(ErrorLine, OneLineWithCodeName) {
  EXPECT_EQ(ErrorLine(absl::NotFoundError("job j-1 not found")),
            "surplus: error: NOT_FOUND: job j-1 not found");
  EXPECT_EQ(ErrorLine(absl::UnavailableError("down\nretry")),
            "surplus: error: UNAVAILABLE: down retry");
  EXPECT_EQ(ErrorLine(UsageError("--bid: bad")), "surplus: error: usage: --bid: bad");
  EXPECT_TRUE(IsUsageError(AsUsageError(absl::InvalidArgumentError("x"))));
  EXPECT_FALSE(IsUsageError(absl::InvalidArgumentError("x")));
}

}  // namespace
}  // namespace surplus::cli
