// Whole `surplus` commands against fake services on an in-process channel: what is
// sent, what is printed, and which exit code comes back.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <deque>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "src/cli/api_client.h"
#include "src/cli/commands.h"

namespace surplus::cli {
namespace {

constexpr char kKey[] = "sk_test";

bool Authorized(grpc::ServerContext* ctx) {
  auto it = ctx->client_metadata().find("authorization");
  return it != ctx->client_metadata().end() &&
         std::string(it->second.data(), it->second.size()) == std::string("Bearer ") + kKey;
}

// Records what it was sent; answers from canned values.
class FakeTenant final : public v1::TenantService::Service {
 public:
  grpc::Status SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                         v1::SubmitJobResponse* resp) override {
    if (!Authorized(ctx)) return {grpc::StatusCode::UNAUTHENTICATED, "bad key"};
    std::lock_guard<std::mutex> lock(mu);
    submitted.push_back(req->spec());
    if (req->spec().name() == "reject") {
      return {grpc::StatusCode::INVALID_ARGUMENT, "no GPU model offers this shape"};
    }
    resp->mutable_job()->set_id("j-" + std::to_string(submitted.size()));
    *resp->mutable_job()->mutable_spec() = req->spec();
    resp->mutable_job()->set_state(v1::JOB_STATE_PENDING);
    resp->set_created(true);
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                      v1::Job* job) override {
    if (!Authorized(ctx)) return {grpc::StatusCode::UNAUTHENTICATED, "bad key"};
    if (req->job_id() == "denied") return {grpc::StatusCode::PERMISSION_DENIED, "operators only"};
    if (req->job_id() == "down") return {grpc::StatusCode::UNAVAILABLE, "database unavailable"};
    if (req->job_id() == "j-pending") {
      job->set_id("j-pending");
      job->set_state(v1::JOB_STATE_PENDING);
      job->set_reason("outbid: clearing price $2.10/GPU-h > your bid $1.80");
      return grpc::Status::OK;
    }
    if (req->job_id() != "j-1") return {grpc::StatusCode::NOT_FOUND, "job " + req->job_id() + " not found"};
    job->set_id("j-1");
    job->set_state(v1::JOB_STATE_SUCCEEDED);
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* req,
                        v1::ListJobsResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu);
    list_requests.push_back(*req);
    // Two pages: j-1, j-2 then j-3.
    if (req->page_token().empty()) {
      resp->add_jobs()->set_id("j-1");
      resp->add_jobs()->set_id("j-2");
      resp->set_next_page_token("p2");
    } else {
      resp->add_jobs()->set_id("j-3");
    }
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    const v1::JobState end =
        req->job_id() == "good" ? v1::JOB_STATE_SUCCEEDED : v1::JOB_STATE_FAILED;
    for (v1::JobState s : {v1::JOB_STATE_PENDING, v1::JOB_STATE_RUNNING, end}) {
      v1::JobEvent ev;
      ev.set_job_id(req->job_id());
      ev.set_state(s);
      if (s == v1::JOB_STATE_FAILED) ev.set_reason("exit code 1");
      writer->Write(ev);
    }
    return grpc::Status::OK;
  }

  grpc::Status GetJobLog(grpc::ServerContext*, const v1::GetJobLogRequest* req,
                         v1::GetJobLogResponse* resp) override {
    // "hello\n" then "world\n", each at its offset; eof at the end.
    const std::string all = "hello\nworld\n";
    const int64_t chunk = 6;
    const int64_t at = std::min<int64_t>(req->offset(), static_cast<int64_t>(all.size()));
    resp->set_data(all.substr(static_cast<size_t>(at), chunk));
    resp->set_next_offset(at + static_cast<int64_t>(resp->data().size()));
    resp->set_eof(resp->next_offset() >= static_cast<int64_t>(all.size()));
    return grpc::Status::OK;
  }

  grpc::Status GetQuote(grpc::ServerContext*, const v1::GetQuoteRequest* req, v1::GetQuoteResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu);
    last_quote = *req;
    resp->set_gpu_model("H100-80GB");
    resp->set_current_clearing_price_micros_per_gpu_hour(1'500'000);
    resp->set_clearing_price_micros_per_gpu_hour(2'100'000);
    resp->set_would_start_now(false);
    resp->set_reason("outbid: clearing price $2.10/GPU-h > your bid $1.80");
    return grpc::Status::OK;
  }

  std::mutex mu;
  v1::GetQuoteRequest last_quote;
  std::vector<v1::JobSpec> submitted;
  std::vector<v1::ListJobsRequest> list_requests;
};

class FakeOperator final : public v1::OperatorService::Service {
 public:
  grpc::Status IssueApiKey(grpc::ServerContext*, const v1::IssueApiKeyRequest* req,
                           v1::IssueApiKeyResponse* resp) override {
    ++issued;
    resp->set_key_id("k-1");
    resp->set_api_key("sk_secret");
    resp->set_role(req->role());
    resp->set_tenant_id(req->tenant_id());
    return grpc::Status::OK;
  }
  grpc::Status ReclaimCapacity(grpc::ServerContext*, const v1::ReclaimCapacityRequest* req,
                               v1::ReclaimCapacityResponse* resp) override {
    last_reclaim = *req;
    resp->add_preempted_job_ids("j-9");
    return grpc::Status::OK;
  }
  int issued = 0;
  v1::ReclaimCapacityRequest last_reclaim;
};

class FakeFinance final : public v1::FinanceService::Service {
 public:
  grpc::Status GetUsage(grpc::ServerContext*, const v1::GetUsageRequest* req,
                        v1::GetUsageResponse* resp) override {
    v1::UsageRow* row = resp->add_rows();
    row->set_tenant_id(req->tenant_id());
    row->set_job_id("j-1");
    row->set_gpu_model("H100-80GB");
    row->set_shape("1g.10gb");
    row->set_gpu_ms(7'200'000);  // 2 GPU-h
    row->set_records(3);
    resp->set_total_gpu_ms(7'200'000);
    return grpc::Status::OK;
  }
};

class CliRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&tenant_);
    builder.RegisterService(&operator_);
    builder.RegisterService(&finance_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override { server_->Shutdown(); }

  int Run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    args.insert(args.begin(), {"--api-key", kKey});
    return RunCli(
        args,
        [this](const ConnectionOptions& options) {
          connected_ = options;
          return std::make_unique<ApiClient>(server_->InProcessChannel(grpc::ChannelArguments()),
                                             options.api_key, options.call_timeout);
        },
        out_, err_);
  }

  FakeTenant tenant_;
  FakeOperator operator_;
  FakeFinance finance_;
  std::unique_ptr<grpc::Server> server_;
  std::ostringstream out_;
  std::ostringstream err_;
  ConnectionOptions connected_;
};

TEST_F(CliRunTest, SubmitSendsExactSpec) {
  ASSERT_EQ(Run({"submit", "--gpus", "2", "--bid", "2.10", "--max-runtime", "30m", "--model",
                 "h100", "--env", "A=1", "--requeue", "--name", "train", "--", "python",
                 "train.py", "--lr", "3"}),
            0)
      << err_.str();
  ASSERT_EQ(tenant_.submitted.size(), 1u);
  const v1::JobSpec& spec = tenant_.submitted[0];
  EXPECT_EQ(spec.shape().whole_gpus().count(), 2);
  EXPECT_EQ(spec.tier(), v1::TIER_SPOT);
  EXPECT_EQ(spec.bid_micros_per_gpu_hour(), 2'100'000);
  EXPECT_EQ(spec.max_runtime_seconds(), 1800);
  EXPECT_EQ(spec.gpu_model(), "H100-80GB");
  EXPECT_TRUE(spec.requeue());
  ASSERT_EQ(spec.workload().exec().argv_size(), 4);
  EXPECT_EQ(spec.workload().exec().argv(2), "--lr");
  EXPECT_EQ(spec.workload().exec().env().at("A"), "1");
  EXPECT_EQ(spec.request_id().substr(0, 4), "req-");
  EXPECT_NE(out_.str().find("j-1"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("$2.10/GPU-h"), std::string::npos) << out_.str();
  EXPECT_EQ(connected_.endpoint, "127.0.0.1:50051");
  EXPECT_EQ(connected_.call_timeout.count(), 10'000);
}

TEST_F(CliRunTest, SubmitRequestIdsAreFreshUnlessGiven) {
  const std::vector<std::string> args = {"submit", "--slice", "1g.10gb", "--tier", "on-demand",
                                         "--builtin", "sleep", "--duration", "10s"};
  ASSERT_EQ(Run(args), 0) << err_.str();
  ASSERT_EQ(Run(args), 0) << err_.str();
  std::vector<std::string> with_id = args;
  with_id.insert(with_id.end(), {"--request-id", "mine-1"});
  ASSERT_EQ(Run(with_id), 0) << err_.str();
  ASSERT_EQ(tenant_.submitted.size(), 3u);
  EXPECT_NE(tenant_.submitted[0].request_id(), tenant_.submitted[1].request_id());
  EXPECT_EQ(tenant_.submitted[2].request_id(), "mine-1");
  EXPECT_EQ(tenant_.submitted[2].workload().builtin().duration_ms(), 10'000);
}

TEST_F(CliRunTest, SubmitJsonIsOneObject) {
  ASSERT_EQ(Run({"submit", "-o", "json", "--gpus", "1", "--bid", "1", "--", "true"}), 0);
  const std::string out = out_.str();
  EXPECT_EQ(out.front(), '{');
  EXPECT_EQ(out.find('\n'), out.size() - 1);
  EXPECT_NE(out.find("\"created\":true"), std::string::npos) << out;
}

TEST_F(CliRunTest, LocalValidationSendsNothing) {
  struct Case {
    std::vector<std::string> args;
    const char* needle;  // in the one error line
  };
  const Case cases[] = {
      {{"submit", "--gpus", "1", "--bid", "abc", "--", "x"}, "--bid"},
      {{"submit", "--gpus", "1", "--bid", "1", "--tier", "gold", "--", "x"}, "--tier"},
      {{"submit", "--gpus", "1", "--bid", "1", "--max-runtime", "1y", "--", "x"}, "--max-runtime"},
      {{"submit", "--gpus", "1", "--bid", "1", "--builtin", "sleep", "--duration", "x"},
       "--duration"},
      {{"submit", "--unknown-flag"}, "--unknown-flag"},
      {{"key", "issue", "--role", "tenant"}, "--tenant"},
      {{"key", "issue", "--role", "admin"}, "--role"},
      {{"usage", "--period", "2025-13"}, "--period"},
      {{"usage"}, "--period"},
      {{"tenant", "create", "Bad_Id"}, "tenant id"},
      {{"reclaim", "n1", "--gpus", "0,x"}, "--gpus"},
      {{"--output", "xml", "jobs"}, "--output"},
      {{"--timeout", "soon", "jobs"}, "--timeout"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Run(c.args), 2) << c.args[0] << " " << err_.str();
    const std::string err = err_.str();
    EXPECT_EQ(err.rfind("surplus: error: usage: ", 0), 0u) << err;
    EXPECT_EQ(err.find('\n'), err.size() - 1) << "not one line: " << err;
    EXPECT_NE(err.find(c.needle), std::string::npos) << err;
  }
  EXPECT_TRUE(tenant_.submitted.empty());
  EXPECT_EQ(operator_.issued, 0);
}

TEST_F(CliRunTest, MissingKeyIsUsageError) {
  out_.str("");
  err_.str("");
  const int code = RunCli({"jobs"}, [](const ConnectionOptions&) { return nullptr; }, out_, err_);
  EXPECT_EQ(code, 2);
  EXPECT_NE(err_.str().find("SURPLUS_API_KEY"), std::string::npos) << err_.str();
}

TEST_F(CliRunTest, ServerErrorsMapToExitCodes) {
  EXPECT_EQ(Run({"job", "nope"}), 3);
  EXPECT_EQ(err_.str(), "surplus: error: NOT_FOUND: job nope not found\n");
  EXPECT_EQ(Run({"job", "denied"}), 4);
  EXPECT_EQ(err_.str(), "surplus: error: PERMISSION_DENIED: operators only\n");
  EXPECT_EQ(Run({"job", "down"}), 6);
  EXPECT_EQ(Run({"submit", "--name", "reject", "--gpus", "1", "--bid", "1", "--", "x"}), 5);
  EXPECT_EQ(err_.str(), "surplus: error: INVALID_ARGUMENT: no GPU model offers this shape\n");
  EXPECT_TRUE(out_.str().empty());
}

TEST_F(CliRunTest, WrongKeyIsExitFour) {
  out_.str("");
  err_.str("");
  const int code = RunCli(
      {"--api-key", "wrong", "job", "j-1"},
      [this](const ConnectionOptions& options) {
        return std::make_unique<ApiClient>(server_->InProcessChannel(grpc::ChannelArguments()),
                                           options.api_key, options.call_timeout);
      },
      out_, err_);
  EXPECT_EQ(code, 4);
  EXPECT_EQ(err_.str(), "surplus: error: UNAUTHENTICATED: bad key\n");
}

TEST_F(CliRunTest, WatchExitsZeroOnlyWhenSucceeded) {
  EXPECT_EQ(Run({"watch", "good"}), 0) << err_.str();
  const std::string out = out_.str();
  EXPECT_NE(out.find("PENDING"), std::string::npos);
  EXPECT_NE(out.find("RUNNING"), std::string::npos);
  EXPECT_NE(out.find("SUCCEEDED"), std::string::npos);
  EXPECT_TRUE(err_.str().empty());

  EXPECT_EQ(Run({"watch", "bad"}), 7);
  EXPECT_NE(out_.str().find("FAILED  exit code 1"), std::string::npos) << out_.str();
  EXPECT_EQ(err_.str(), "surplus: error: job bad ended FAILED: exit code 1\n");
}

TEST_F(CliRunTest, LogsFollowReadsToTheEnd) {
  EXPECT_EQ(Run({"logs", "j-1", "--follow"}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "hello\nworld\n");
  EXPECT_EQ(Run({"logs", "j-1", "--offset", "6"}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "world\n");
}

TEST_F(CliRunTest, JobsFollowsPagesAndFilters) {
  ASSERT_EQ(Run({"jobs", "--state", "running,pending"}), 0) << err_.str();
  ASSERT_EQ(tenant_.list_requests.size(), 2u);
  EXPECT_EQ(tenant_.list_requests[0].states_size(), 2);
  EXPECT_EQ(tenant_.list_requests[1].page_token(), "p2");
  const std::string out = out_.str();
  EXPECT_EQ(out.rfind("ID ", 0), 0u) << out;
  EXPECT_NE(out.find("j-3"), std::string::npos) << out;

  ASSERT_EQ(Run({"jobs", "--limit", "1", "-o", "json"}), 0);
  EXPECT_NE(out_.str().find("\"j-1\""), std::string::npos);
  EXPECT_EQ(out_.str().find("\"j-2\""), std::string::npos) << out_.str();
}

TEST_F(CliRunTest, KeyIssuePrintsSecretOnce) {
  ASSERT_EQ(Run({"key", "issue", "--role", "tenant", "--tenant", "acme"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("sk_secret"), std::string::npos);
  EXPECT_NE(err_.str().find("only this once"), std::string::npos);
}

TEST_F(CliRunTest, QuoteSendsTheTermsAndShowsBothPrices) {
  ASSERT_EQ(Run({"quote", "--slice", "3g.40gb", "--bid", "1.80", "--model", "h100-80gb", "--max-runtime", "90s"}), 0)
      << err_.str();
  EXPECT_EQ(tenant_.last_quote.shape().slice_profile(), "3g.40gb");
  EXPECT_EQ(tenant_.last_quote.tier(), v1::TIER_SPOT);
  EXPECT_EQ(tenant_.last_quote.bid_micros_per_gpu_hour(), 1'800'000);
  EXPECT_EQ(tenant_.last_quote.gpu_model(), "H100-80GB");
  EXPECT_EQ(tenant_.last_quote.max_runtime_seconds(), 90);
  const std::string out = out_.str();
  EXPECT_NE(out.find("clearing price now"), std::string::npos) << out;
  EXPECT_NE(out.find("$1.50/GPU-h"), std::string::npos) << out;
  EXPECT_NE(out.find("clearing price with it"), std::string::npos) << out;
  EXPECT_NE(out.find("$2.10/GPU-h"), std::string::npos) << out;
  EXPECT_NE(out.find("outbid: clearing price $2.10/GPU-h > your bid $1.80"), std::string::npos) << out;
  EXPECT_EQ(Run({"quote", "--slice", "3g.40gb", "--bid", "cheap"}), 2);
}

TEST_F(CliRunTest, JobShowsWhyItIsPending) {
  ASSERT_EQ(Run({"job", "j-pending"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("outbid: clearing price $2.10/GPU-h > your bid $1.80"), std::string::npos) << out_.str();
}

TEST_F(CliRunTest, ReclaimSendsIndices) {
  ASSERT_EQ(Run({"reclaim", "node-a", "--gpus", "0,1"}), 0) << err_.str();
  EXPECT_EQ(operator_.last_reclaim.node(), "node-a");
  EXPECT_EQ(operator_.last_reclaim.action(), v1::RECLAIM_ACTION_RECLAIM);
  EXPECT_EQ(operator_.last_reclaim.gpu_indices_size(), 2);
  ASSERT_EQ(Run({"reclaim", "node-a", "--release"}), 0) << err_.str();
  EXPECT_EQ(operator_.last_reclaim.action(), v1::RECLAIM_ACTION_RELEASE);
  EXPECT_EQ(operator_.last_reclaim.gpu_indices_size(), 0);
}

TEST_F(CliRunTest, UsageCsv) {
  ASSERT_EQ(Run({"usage", "--tenant", "acme", "--period", "2025-03", "--output", "csv"}), 0)
      << err_.str();
  EXPECT_EQ(out_.str(),
            "tenant_id,job_id,gpu_model,shape,gpu_ms,gpu_hours,records\r\n"
            "acme,j-1,H100-80GB,1g.10gb,7200000,2.000,3\r\n");
}

TEST_F(CliRunTest, UnimplementedIsGenericFailure) {
  // FakeOperator does not implement ListTenants.
  EXPECT_EQ(Run({"tenants"}), 1);
  EXPECT_EQ(err_.str().rfind("surplus: error: UNIMPLEMENTED: ", 0), 0u) << err_.str();
}

TEST_F(CliRunTest, HelpExitsZero) {
  EXPECT_EQ(Run({"--help"}), 0);
  EXPECT_NE(out_.str().find("Exit codes"), std::string::npos);
  EXPECT_EQ(Run({"submit", "--help"}), 0);
  EXPECT_NE(out_.str().find("--request-id"), std::string::npos);
}

}  // namespace
}  // namespace surplus::cli
