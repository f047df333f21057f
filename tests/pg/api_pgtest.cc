// The control plane's API against a real PostgreSQL: the real surplus-control binary on a
// loopback port, driven through gRPC.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "src/store/migrations.h"
#include "tests/support/stack.h"

namespace surplus::testing {
namespace {
namespace v1 = surplus::v1;

v1::JobSpec SleepSpec(const std::string& request_id) {
  v1::JobSpec spec;
  spec.set_request_id(request_id);
  spec.set_name("sleeper");
  spec.mutable_shape()->set_slice_profile("1g.10gb");
  spec.set_tier(v1::TIER_SPOT);
  spec.set_bid_micros_per_gpu_hour(2'000'000);
  spec.mutable_workload()->mutable_builtin()->set_kind(v1::BUILTIN_KIND_SLEEP);
  spec.mutable_workload()->mutable_builtin()->set_duration_ms(1000);
  return spec;
}

grpc::Status Submit(const Stack& s, const std::string& key, const v1::JobSpec& spec, v1::SubmitJobResponse* resp) {
  v1::SubmitJobRequest req;
  *req.mutable_spec() = spec;
  auto ctx = Ctx(key);
  return s.Tenant()->SubmitJob(ctx.get(), req, resp);
}

class ApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { stack_ = new Stack("api"); }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  static Stack* stack_;
};
Stack* ApiTest::stack_ = nullptr;

TEST_F(ApiTest, SubmitGetListCancel) {
  const std::string key = stack_->CreateTenant("acme");
  v1::SubmitJobResponse sub;
  ASSERT_TRUE(Submit(*stack_, key, SleepSpec("r-1"), &sub).ok());
  EXPECT_TRUE(sub.created());
  EXPECT_EQ(sub.job().state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(sub.job().tenant_id(), "acme");
  const std::string id = sub.job().id();

  v1::GetJobRequest get;
  get.set_job_id(id);
  v1::Job job;
  auto c1 = Ctx(key);
  ASSERT_TRUE(stack_->Tenant()->GetJob(c1.get(), get, &job).ok());
  EXPECT_EQ(job.spec().request_id(), "r-1");
  EXPECT_EQ(job.spec().shape().slice_profile(), "1g.10gb");
  EXPECT_EQ(job.spec().bid_micros_per_gpu_hour(), 2'000'000);

  // A second job, then list page by page (page size 1).
  ASSERT_TRUE(Submit(*stack_, key, SleepSpec("r-2"), &sub).ok());
  std::vector<std::string> seen;
  std::string token;
  do {
    v1::ListJobsRequest list;
    list.set_page_size(1);
    list.set_page_token(token);
    v1::ListJobsResponse page;
    auto c = Ctx(key);
    ASSERT_TRUE(stack_->Tenant()->ListJobs(c.get(), list, &page).ok());
    for (const auto& j : page.jobs()) seen.push_back(j.spec().request_id());
    token = page.next_page_token();
  } while (!token.empty());
  EXPECT_EQ(seen, (std::vector<std::string>{"r-1", "r-2"}));

  v1::CancelJobRequest cancel;
  cancel.set_job_id(id);
  auto c2 = Ctx(key);
  ASSERT_TRUE(stack_->Tenant()->CancelJob(c2.get(), cancel, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  // Listing with a state filter shows only the cancelled one.
  v1::ListJobsRequest list;
  list.add_states(v1::JOB_STATE_CANCELLED);
  v1::ListJobsResponse page;
  auto c3 = Ctx(key);
  ASSERT_TRUE(stack_->Tenant()->ListJobs(c3.get(), list, &page).ok());
  ASSERT_EQ(page.jobs_size(), 1);
  EXPECT_EQ(page.jobs(0).id(), id);
}

TEST_F(ApiTest, RepeatedRequestIdYieldsOneJob) {
  const std::string key = stack_->CreateTenant("idem");
  v1::SubmitJobResponse a, b;
  ASSERT_TRUE(Submit(*stack_, key, SleepSpec("same"), &a).ok());
  ASSERT_TRUE(Submit(*stack_, key, SleepSpec("same"), &b).ok());
  EXPECT_TRUE(a.created());
  EXPECT_FALSE(b.created());
  EXPECT_EQ(a.job().id(), b.job().id());
  // Concurrent duplicates too.
  std::vector<std::thread> threads;
  std::vector<std::string> ids(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      v1::SubmitJobResponse r;
      if (Submit(*stack_, key, SleepSpec("burst"), &r).ok()) ids[static_cast<size_t>(i)] = r.job().id();
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& id : ids) EXPECT_EQ(id, ids[0]);
  EXPECT_EQ(stack_->Sql("SELECT count(*) FROM jobs WHERE tenant_id = 'idem'"), "2");
}

TEST_F(ApiTest, PendingJobsQuotaIsResourceExhausted) {
  v1::CreateTenantRequest ct;
  ct.set_id("capped");
  ct.set_max_pending_jobs(2);
  v1::Tenant t;
  auto op = Ctx(stack_->operator_key());
  ASSERT_TRUE(stack_->Operator()->CreateTenant(op.get(), ct, &t).ok());
  const std::string key = stack_->IssueKey(v1::ROLE_TENANT, "capped");
  v1::SubmitJobResponse sub;
  ASSERT_TRUE(Submit(*stack_, key, SleepSpec("q-1"), &sub).ok());
  ASSERT_TRUE(Submit(*stack_, key, SleepSpec("q-2"), &sub).ok());
  grpc::Status s = Submit(*stack_, key, SleepSpec("q-3"), &sub);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("over quota"), std::string::npos);
  // A retry of an accepted request still answers with its job.
  ASSERT_TRUE(Submit(*stack_, key, SleepSpec("q-1"), &sub).ok());
  EXPECT_FALSE(sub.created());
  EXPECT_EQ(stack_->Sql("SELECT count(*) FROM jobs WHERE tenant_id = 'capped'"), "2");
}

TEST_F(ApiTest, AnotherTenantsJobIsNotFound) {
  const std::string alice = stack_->CreateTenant("alice");
  const std::string bob = stack_->CreateTenant("bob");
  v1::SubmitJobResponse sub;
  ASSERT_TRUE(Submit(*stack_, alice, SleepSpec("a-1"), &sub).ok());
  v1::GetJobRequest get;
  get.set_job_id(sub.job().id());
  v1::Job job;
  auto c = Ctx(bob);
  EXPECT_EQ(stack_->Tenant()->GetJob(c.get(), get, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::CancelJobRequest cancel;
  cancel.set_job_id(sub.job().id());
  auto c2 = Ctx(bob);
  EXPECT_EQ(stack_->Tenant()->CancelJob(c2.get(), cancel, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::ListJobsResponse page;
  auto c3 = Ctx(bob);
  ASSERT_TRUE(stack_->Tenant()->ListJobs(c3.get(), v1::ListJobsRequest(), &page).ok());
  for (const auto& j : page.jobs()) EXPECT_EQ(j.tenant_id(), "bob");
  // Still there for its owner.
  auto c4 = Ctx(alice);
  EXPECT_TRUE(stack_->Tenant()->GetJob(c4.get(), get, &job).ok());
}

TEST_F(ApiTest, MissingOrRevokedKeyIsUnauthenticated) {
  v1::ListJobsResponse page;
  auto none = Ctx("");
  EXPECT_EQ(stack_->Tenant()->ListJobs(none.get(), v1::ListJobsRequest(), &page).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  auto bogus = Ctx("sk_not_a_real_key");
  EXPECT_EQ(stack_->Tenant()->ListJobs(bogus.get(), v1::ListJobsRequest(), &page).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  stack_->CreateTenant("revokee");
  std::string key_id;
  const std::string key = stack_->IssueKey(v1::ROLE_TENANT, "revokee", &key_id);
  auto ok = Ctx(key);
  ASSERT_TRUE(stack_->Tenant()->ListJobs(ok.get(), v1::ListJobsRequest(), &page).ok());
  v1::RevokeApiKeyRequest rev;
  rev.set_key_id(key_id);
  v1::RevokeApiKeyResponse rr;
  auto op = Ctx(stack_->operator_key());
  ASSERT_TRUE(stack_->Operator()->RevokeApiKey(op.get(), rev, &rr).ok());
  EXPECT_TRUE(rr.revoked());
  auto after = Ctx(key);
  EXPECT_EQ(stack_->Tenant()->ListJobs(after.get(), v1::ListJobsRequest(), &page).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // The secret is stored only as a hash.
  EXPECT_EQ(stack_->Sql(absl::StrCat("SELECT count(*) FROM api_keys WHERE key_hash = '", key, "'")), "0");
}

TEST_F(ApiTest, RolesArePermissionDenied) {
  const std::string tenant = stack_->CreateTenant("nosy");
  v1::ListNodesResponse nodes;
  auto c = Ctx(tenant);
  EXPECT_EQ(stack_->Operator()->ListNodes(c.get(), v1::ListNodesRequest(), &nodes).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::CreateTenantRequest ct;
  ct.set_id("evil");
  v1::Tenant t;
  auto c2 = Ctx(tenant);
  EXPECT_EQ(stack_->Operator()->CreateTenant(c2.get(), ct, &t).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // Finance may not submit jobs.
  const std::string finance = stack_->IssueKey(v1::ROLE_FINANCE);
  v1::SubmitJobResponse sub;
  EXPECT_EQ(Submit(*stack_, finance, SleepSpec("f-1"), &sub).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(ApiTest, BadFieldsAreInvalidArgumentNamingTheField) {
  const std::string key = stack_->CreateTenant("sloppy");
  struct Case {
    std::string field;  // expected in the message
    std::function<void(v1::JobSpec*)> mutate;
  };
  const std::vector<Case> cases = {
      {"slice_profile", [](v1::JobSpec* s) { s->mutable_shape()->set_slice_profile("5g.50gb"); }},
      {"whole_gpus.count", [](v1::JobSpec* s) { s->mutable_shape()->mutable_whole_gpus()->set_count(0); }},
      {"whole_gpus.count", [](v1::JobSpec* s) { s->mutable_shape()->mutable_whole_gpus()->set_count(9); }},
      {"gang.nodes", [](v1::JobSpec* s) { s->mutable_shape()->mutable_gang()->set_gpus_per_node(8); }},
      {"spec.shape", [](v1::JobSpec* s) { s->mutable_shape()->Clear(); }},
      {"bid_micros_per_gpu_hour", [](v1::JobSpec* s) { s->set_bid_micros_per_gpu_hour(-1); }},
      {"bid_micros_per_gpu_hour", [](v1::JobSpec* s) { s->set_bid_micros_per_gpu_hour(5'000'000'000'000); }},
      {"bid_micros_per_gpu_hour", [](v1::JobSpec* s) { s->set_bid_micros_per_gpu_hour(0); }},
      {"argv", [](v1::JobSpec* s) { s->mutable_workload()->mutable_exec(); }},
      {"request_id", [](v1::JobSpec* s) { s->set_request_id(""); }},
      {"request_id", [](v1::JobSpec* s) { s->set_request_id(std::string(1000, 'x')); }},
      {"name", [](v1::JobSpec* s) { s->set_name(std::string(1000, 'n')); }},
      {"spec.tier", [](v1::JobSpec* s) { s->set_tier(static_cast<v1::Tier>(42)); }},
      {"spec.tier", [](v1::JobSpec* s) { s->set_tier(v1::TIER_UNSPECIFIED); }},
      {"builtin.kind", [](v1::JobSpec* s) {
         s->mutable_workload()->mutable_builtin()->set_kind(static_cast<v1::BuiltinKind>(99));
       }},
      {"duration_ms", [](v1::JobSpec* s) { s->mutable_workload()->mutable_builtin()->set_duration_ms(0); }},
      {"gpu_model", [](v1::JobSpec* s) { s->set_gpu_model("V100-16GB"); }},
      {"max_runtime_seconds", [](v1::JobSpec* s) { s->set_max_runtime_seconds(-5); }},
      {"env", [](v1::JobSpec* s) {
         auto* e = s->mutable_workload()->mutable_exec();
         e->add_argv("/bin/true");
         (*e->mutable_env())["BAD-NAME"] = "x";
       }},
      {"spec.workload", [](v1::JobSpec* s) { s->mutable_workload()->Clear(); }},
      {"shape.cpu_millis", [](v1::JobSpec* s) { s->mutable_shape()->set_cpu_millis(-1); }},
      {"shape.cpu_millis", [](v1::JobSpec* s) { s->mutable_shape()->set_cpu_millis(5'000'000); }},
      {"shape.memory_mib", [](v1::JobSpec* s) { s->mutable_shape()->set_memory_mib(-4096); }},
      {"shape.memory_mib", [](v1::JobSpec* s) { s->mutable_shape()->set_memory_mib(int64_t{1} << 40); }},
  };
  for (const auto& c : cases) {
    v1::JobSpec spec = SleepSpec("bad-" + c.field);
    c.mutate(&spec);
    v1::SubmitJobResponse sub;
    grpc::Status s = Submit(*stack_, key, spec, &sub);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field << ": " << s.error_message();
    EXPECT_NE(s.error_message().find(c.field), std::string::npos) << c.field << ": " << s.error_message();
  }
  // Nothing was written.
  EXPECT_EQ(stack_->Sql("SELECT count(*) FROM jobs WHERE tenant_id = 'sloppy'"), "0");
  // Other services check their fields too.
  v1::CreateTenantRequest ct;
  ct.set_id("Bad Id!");
  v1::Tenant t;
  auto op = Ctx(stack_->operator_key());
  grpc::Status s = stack_->Operator()->CreateTenant(op.get(), ct, &t);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("id"), std::string::npos);
  v1::GetInvoiceRequest gi;
  gi.set_tenant_id("sloppy");
  gi.set_period("2026-13");
  v1::Invoice inv;
  auto op2 = Ctx(stack_->operator_key());
  s = stack_->Finance()->GetInvoice(op2.get(), gi, &inv);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("period"), std::string::npos);
  // Quotes take the fields of a job that shape its schedule, and check them the same way.
  const std::vector<std::pair<std::string, std::function<void(v1::GetQuoteRequest*)>>> quote_cases = {
      {"max_runtime_seconds", [](v1::GetQuoteRequest* q) { q->set_max_runtime_seconds(-1); }},
      {"max_runtime_seconds", [](v1::GetQuoteRequest* q) { q->set_max_runtime_seconds(int64_t{1} << 40); }},
      {"bid_micros_per_gpu_hour", [](v1::GetQuoteRequest* q) { q->set_bid_micros_per_gpu_hour(-1); }},
      // As SubmitJob: a spot bid of zero is refused, not quoted as starting for free.
      {"a spot job needs a bid above zero", [](v1::GetQuoteRequest* q) { q->set_bid_micros_per_gpu_hour(0); }},
      {"slice_profile", [](v1::GetQuoteRequest* q) { q->mutable_shape()->set_slice_profile("5g.50gb"); }},
      {"tier", [](v1::GetQuoteRequest* q) { q->set_tier(v1::TIER_UNSPECIFIED); }},
  };
  for (const auto& [field, mutate] : quote_cases) {
    v1::GetQuoteRequest q;
    q.mutable_shape()->set_slice_profile("1g.10gb");
    q.set_tier(v1::TIER_SPOT);
    q.set_bid_micros_per_gpu_hour(2'000'000);
    q.set_max_runtime_seconds(600);
    mutate(&q);
    v1::GetQuoteResponse resp;
    auto tc = Ctx(key);
    s = stack_->Tenant()->GetQuote(tc.get(), q, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field << ": " << s.error_message();
    EXPECT_NE(s.error_message().find(field), std::string::npos) << field << ": " << s.error_message();
  }
}

TEST_F(ApiTest, RegisterRejectsNodeNamesThatCannotTravelInLists) {
  auto worker = v1::WorkerService::NewStub(MakeChannel(stack_->endpoint(), ""));
  const std::string key = stack_->IssueKey(v1::ROLE_WORKER);
  auto reg = [&](const std::string& node) {
    v1::RegisterRequest req;
    req.set_node(node);
    req.set_gpu_model("H100-80GB");
    req.add_gpus()->set_index(0);
    v1::RegisterResponse resp;
    auto ctx = Ctx(key);
    return worker->Register(ctx.get(), req, &resp);
  };
  for (const std::string& bad : std::vector<std::string>{"", "a,b", "a|b", "rack 1", "n;1", std::string(254, 'n')}) {
    grpc::Status s = reg(bad);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "'" << bad << "': " << s.error_message();
    EXPECT_NE(s.error_message().find("node"), std::string::npos) << s.error_message();
  }
  EXPECT_TRUE(reg("gpu-node_07.rack-3").ok());
  EXPECT_EQ(stack_->Sql("SELECT count(*) FROM nodes WHERE name LIKE '%,%' OR name LIKE '%|%'"), "0");
}

TEST_F(ApiTest, RegisterStoresTheHostSizeAndRefusesANegativeOne) {
  auto worker = v1::WorkerService::NewStub(MakeChannel(stack_->endpoint(), ""));
  const std::string key = stack_->IssueKey(v1::ROLE_WORKER);
  auto reg = [&](int64_t cpu, int64_t memory) {
    v1::RegisterRequest req;
    req.set_node("host-1");
    req.set_gpu_model("H100-80GB");
    req.add_gpus()->set_index(0);
    req.set_cpu_millis(cpu);
    req.set_memory_mib(memory);
    v1::RegisterResponse resp;
    auto ctx = Ctx(key);
    return worker->Register(ctx.get(), req, &resp);
  };
  grpc::Status s = reg(-1000, 4096);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("cpu_millis"), std::string::npos) << s.error_message();
  s = reg(1000, -1);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("memory_mib"), std::string::npos) << s.error_message();
  EXPECT_EQ(stack_->Sql("SELECT count(*) FROM nodes WHERE name = 'host-1'"), "0");
  ASSERT_TRUE(reg(96'000, 786'432).ok());
  EXPECT_EQ(stack_->Sql("SELECT cpu_millis || '/' || memory_mib FROM nodes WHERE name = 'host-1'"), "96000/786432");
  // Operators see it.
  v1::ListNodesResponse nodes;
  auto c = Ctx(stack_->operator_key());
  ASSERT_TRUE(stack_->Operator()->ListNodes(c.get(), v1::ListNodesRequest(), &nodes).ok());
  ASSERT_EQ(nodes.nodes_size(), 1);
  EXPECT_EQ(nodes.nodes(0).cpu_millis(), 96'000);
  EXPECT_EQ(nodes.nodes(0).memory_mib(), 786'432);
}

TEST_F(ApiTest, RegisterChecksMigGeometryAgainstTheModel) {
  auto worker = v1::WorkerService::NewStub(MakeChannel(stack_->endpoint(), ""));
  const std::string key = stack_->IssueKey(v1::ROLE_WORKER);
  // GPU 0's instances as "profile@start" pairs; mig=false sends them without MIG mode.
  auto reg = [&](const std::vector<std::pair<std::string, int>>& slices, bool mig = true) {
    v1::RegisterRequest req;
    req.set_node("mig-node");
    req.set_gpu_model("H100-80GB");
    v1::GpuDescription* g = req.add_gpus();
    g->set_index(0);
    g->set_mig_enabled(mig);
    for (const auto& [profile, start] : slices) {
      v1::MigSlice* m = g->add_mig_slices();
      m->set_profile(profile);
      m->set_slot_start(start);
    }
    v1::RegisterResponse resp;
    auto ctx = Ctx(key);
    return worker->Register(ctx.get(), req, &resp);
  };
  const std::vector<std::pair<std::vector<std::pair<std::string, int>>, std::string>> bad = {
      {{{"5g.50gb", 0}}, "'5g.50gb' is not a slice profile of H100-80GB"},
      {{{"7g.80gb", 0}}, "'7g.80gb' is not a slice profile of H100-80GB"},
      {{{"3g.40gb", 2}}, "3g.40gb cannot start at memory slot 2"},
      {{{"3g.40gb", 0}, {"1g.10gb", 3}}, "instances overlap at 1g.10gb@3"},
  };
  for (const auto& [slices, why] : bad) {
    grpc::Status s = reg(slices);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << why << ": " << s.error_message();
    EXPECT_EQ(s.error_message(), "gpus[0].mig_slices: " + why);
  }
  grpc::Status not_mig = reg({{"1g.10gb", 0}}, /*mig=*/false);
  EXPECT_EQ(not_mig.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(not_mig.error_message(), "gpus[0].mig_slices: the GPU is not in MIG mode");
  EXPECT_EQ(stack_->Sql("SELECT count(*) FROM nodes WHERE name = 'mig-node'"), "0");  // nothing half-written

  ASSERT_TRUE(reg({{"4g.40gb", 0}, {"2g.20gb", 4}, {"1g.10gb", 6}}).ok());
  EXPECT_EQ(stack_->Sql("SELECT mig_slices FROM gpus WHERE node = 'mig-node'"), "4g.40gb@0,2g.20gb@4,1g.10gb@6");
  ASSERT_TRUE(reg({}, /*mig=*/true).ok());  // MIG mode, no instances: nothing to give out
  EXPECT_EQ(stack_->Sql("SELECT coalesce(mig_slices, 'null') FROM gpus WHERE node = 'mig-node'"), "");
  ASSERT_TRUE(reg({}, /*mig=*/false).ok());  // MIG mode off again
  EXPECT_EQ(stack_->Sql("SELECT coalesce(mig_slices, 'null') FROM gpus WHERE node = 'mig-node'"), "null");
}

TEST_F(ApiTest, OversizedMessageIsRejected) {
  const std::string key = stack_->CreateTenant("huge");
  v1::JobSpec spec = SleepSpec("big");
  spec.set_name(std::string(5 * 1024 * 1024, 'x'));
  v1::SubmitJobResponse sub;
  grpc::Status s = Submit(*stack_, key, spec, &sub);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
}

TEST_F(ApiTest, WatchStreamsUntilTheJobEnds) {
  const std::string key = stack_->CreateTenant("watcher");
  v1::SubmitJobResponse sub;
  ASSERT_TRUE(Submit(*stack_, key, SleepSpec("w-1"), &sub).ok());
  v1::WatchJobRequest req;
  req.set_job_id(sub.job().id());
  auto ctx = Ctx(key, 20000);
  auto reader = stack_->Tenant()->WatchJob(ctx.get(), req);
  v1::JobEvent ev;
  ASSERT_TRUE(reader->Read(&ev));
  EXPECT_EQ(ev.state(), v1::JOB_STATE_PENDING);
  v1::CancelJobRequest cancel;
  cancel.set_job_id(sub.job().id());
  v1::Job job;
  auto c2 = Ctx(key);
  ASSERT_TRUE(stack_->Tenant()->CancelJob(c2.get(), cancel, &job).ok());
  v1::JobState last = ev.state();
  while (reader->Read(&ev)) last = ev.state();
  EXPECT_EQ(last, v1::JOB_STATE_CANCELLED);
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(ApiTest, OperatorKeyFileIsOwnerOnly) {
  struct stat st {};
  ASSERT_EQ(stat((stack_->dir() + "/operator.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  EXPECT_EQ(stack_->operator_key().rfind("sk_", 0), 0u);
}

TEST(Migrations, TwiceOrConcurrentlyLeaveTheSchemaUnchanged) {
  const std::string url = SharedPg().CreateDatabase("migrations");
  // Two migrate processes at once: each migration is applied exactly once.
  std::string out1, out2;
  int rc1 = 0, rc2 = 0;
  std::thread t1([&] { rc1 = RunCommand({ControlBin(), "migrate", "--database-url", url}, &out1); });
  std::thread t2([&] { rc2 = RunCommand({ControlBin(), "migrate", "--database-url", url}, &out2); });
  t1.join();
  t2.join();
  ASSERT_EQ(rc1, 0) << out1;
  ASSERT_EQ(rc2, 0) << out2;
  auto schema = [&] {
    std::string out;
    RunCommand({"pg_dump", "--schema-only", "--no-owner", url}, &out, false);
    // pg_dump marks its output with a random per-run token; drop those lines.
    std::string kept;
    for (absl::string_view line : absl::StrSplit(out, '\n')) {
      if (absl::StartsWith(line, "\\restrict") || absl::StartsWith(line, "\\unrestrict")) continue;
      absl::StrAppend(&kept, line, "\n");
    }
    return kept;
  };
  const std::string before = schema();
  ASSERT_NE(before.find("CREATE TABLE public.jobs"), std::string::npos);
  std::string out;
  ASSERT_EQ(RunCommand({ControlBin(), "migrate", "--database-url", url}, &out), 0) << out;
  EXPECT_TRUE(schema() == before) << "schema changed by a second migrate";
  std::string count;
  RunCommand({"psql", url, "-tA", "-c", "SELECT count(*) FROM schema_migrations"}, &count, false);
  EXPECT_EQ(count, absl::StrCat(store::EmbeddedMigrations().size(), "\n"));
}

TEST(Resilience, SurvivesADatabaseRestart) {
  Stack stack("restart");
  const std::string key = stack.CreateTenant("durable");
  v1::SubmitJobResponse sub;
  ASSERT_TRUE(Submit(stack, key, SleepSpec("before"), &sub).ok());
  SharedPg().Stop();
  v1::ListJobsResponse page;
  // Known key (cached), but the database is gone: UNAVAILABLE, and the server lives on.
  auto c = Ctx(key, 8000);
  grpc::Status s = stack.Tenant()->ListJobs(c.get(), v1::ListJobsRequest(), &page);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  s = Submit(stack, key, SleepSpec("during"), &sub);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  SharedPg().Start();
  bool ok = WaitFor(
      [&] {
        v1::ListJobsResponse p;
        auto cc = Ctx(key, 3000);
        return stack.Tenant()->ListJobs(cc.get(), v1::ListJobsRequest(), &p).ok();
      },
      20000);
  EXPECT_TRUE(ok) << stack.control_log();
  EXPECT_TRUE(Submit(stack, key, SleepSpec("after"), &sub).ok());
}

}  // namespace
}  // namespace surplus::testing
