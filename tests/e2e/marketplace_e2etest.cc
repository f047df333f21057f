// End to end on one machine: real surplus-control, surplus-billing and simulated
// surplus-worker processes on loopback ports, a real PostgreSQL, driven through gRPC and
// the `surplus` CLI.

#include <gtest/gtest.h>
#include <signal.h>

#include <httplib.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gpu_worker/cgroups.h"
#include "tests/support/stack.h"

namespace surplus::testing {
namespace {
namespace v1 = surplus::v1;

// Reserve price: $1.234567 per GPU-hour, so that amounts need rounding.
constexpr int64_t kReserve = 1'234'567;

// The test's own 128-bit integer, independent of the project's money code.
__extension__ typedef __int128 Wide;

v1::JobSpec ExecSpec(const std::string& request_id, const std::vector<std::string>& argv, int whole_gpus,
                     const std::string& slice, int64_t bid) {
  v1::JobSpec spec;
  spec.set_request_id(request_id);
  if (slice.empty()) {
    spec.mutable_shape()->mutable_whole_gpus()->set_count(whole_gpus);
  } else {
    spec.mutable_shape()->set_slice_profile(slice);
  }
  spec.set_tier(v1::TIER_SPOT);
  spec.set_bid_micros_per_gpu_hour(bid);
  for (const auto& a : argv) spec.mutable_workload()->mutable_exec()->add_argv(a);
  return spec;
}

class E2e : public ::testing::Test {
 protected:
  void Start(const std::string& name, std::vector<std::string> control_args = {}, bool tls = false) {
    StackOptions o;
    o.billing = true;
    o.tls = tls;
    o.control_args = std::move(control_args);
    stack_ = std::make_unique<Stack>(name, o);
    key_ = stack_->CreateTenant("acme");
    v1::SetReservePriceRequest req;
    req.set_gpu_model("H100-80GB");
    req.set_reserve_micros_per_gpu_hour(kReserve);
    v1::SetReservePriceResponse resp;
    auto c = Ctx(stack_->operator_key());
    ASSERT_TRUE(stack_->Operator()->SetReservePrice(c.get(), req, &resp).ok());
  }

  std::string Submit(const v1::JobSpec& spec) {
    v1::SubmitJobRequest req;
    *req.mutable_spec() = spec;
    v1::SubmitJobResponse resp;
    auto c = Ctx(key_);
    grpc::Status s = stack_->Tenant()->SubmitJob(c.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.job().id();
  }

  v1::Job Get(const std::string& id) {
    v1::GetJobRequest req;
    req.set_job_id(id);
    v1::Job job;
    auto c = Ctx(key_);
    stack_->Tenant()->GetJob(c.get(), req, &job);
    return job;
  }

  grpc::Status Cancel(const std::string& id) {
    v1::CancelJobRequest req;
    req.set_job_id(id);
    v1::Job job;
    auto c = Ctx(key_);
    return stack_->Tenant()->CancelJob(c.get(), req, &job);
  }

  // Waits until the job is in `state` (and, for RUNNING, has started on its node).
  bool WaitState(const std::string& id, v1::JobState state, int timeout_ms) {
    return WaitFor(
        [&] {
          v1::Job j = Get(id);
          return j.state() == state && (state != v1::JOB_STATE_RUNNING || j.has_started_at());
        },
        timeout_ms);
  }

  // Waits until billing holds the job's final usage record.
  bool WaitFinalUsage(const std::string& id, int timeout_ms) {
    return WaitFor([&] { return stack_->Sql("SELECT count(*) FROM usage_records WHERE final AND job_id = '" + id + "'") == "1"; },
                   timeout_ms);
  }

  struct Rec {
    int64_t start, end, gpu_ms;
  };
  std::vector<Rec> Records(const std::string& id) {
    std::vector<Rec> out;
    const std::string rows = stack_->Sql(
        "SELECT start_ms, end_ms, gpu_ms FROM usage_records WHERE job_id = '" + id + "' ORDER BY start_ms");
    for (absl::string_view line : absl::StrSplit(rows, '\n', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(line, '|');
      Rec r{};
      EXPECT_TRUE(absl::SimpleAtoi(f[0], &r.start) && absl::SimpleAtoi(f[1], &r.end) && absl::SimpleAtoi(f[2], &r.gpu_ms));
      out.push_back(r);
    }
    return out;
  }

  // Usage intervals of a job tile its run: no gap, no overlap, nothing twice; returns the
  // metered wall milliseconds.
  int64_t ExpectTiled(const std::string& id) {
    std::vector<Rec> recs = Records(id);
    EXPECT_FALSE(recs.empty()) << id;
    for (size_t i = 1; i < recs.size(); ++i) {
      EXPECT_EQ(recs[i].start, recs[i - 1].end) << id << " record " << i;
    }
    return recs.empty() ? 0 : recs.back().end - recs.front().start;
  }

  // The invoice as the test computes it from the raw tables: each usage record is split at
  // the price changes of its job's attempt inside it, its gpu_ms shared out by wall time
  // (part [c, d) of [s, e) gets floor(G(d-s)/D) - floor(G(c-s)/D)), each part at the price
  // in force at its start; per job the sum of gpu_ms x price is divided by 3,600,000 once,
  // half to even.
  std::map<std::string, int64_t> IndependentAmounts(const std::string& period) {
    std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> prices;  // job/attempt -> (from, price)
    for (absl::string_view line : absl::StrSplit(
             stack_->Sql("SELECT job_id || '/' || attempt, effective_ms, price_micros FROM job_prices"
                         " ORDER BY 1, 2"),
             '\n', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(line, '|');
      int64_t from = 0, price = 0;
      EXPECT_TRUE(absl::SimpleAtoi(f[1], &from) && absl::SimpleAtoi(f[2], &price)) << line;
      prices[f[0]].emplace_back(from, price);
    }
    std::map<std::string, Wide> numerators;
    const std::string rows = stack_->Sql(
        "SELECT u.job_id, u.attempt, u.start_ms, u.end_ms, u.gpu_ms FROM usage_records u"
        " WHERE u.tenant_id = 'acme' AND to_char(to_timestamp(u.start_ms / 1000.0)"
        " AT TIME ZONE 'UTC', 'YYYY-MM') = '" + period + "'");
    for (absl::string_view line : absl::StrSplit(rows, '\n', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(line, '|');
      int64_t start = 0, end = 0, gpu_ms = 0;
      EXPECT_TRUE(absl::SimpleAtoi(f[2], &start) && absl::SimpleAtoi(f[3], &end) &&
                  absl::SimpleAtoi(f[4], &gpu_ms))
          << line;
      const auto& history = prices[f[0] + "/" + f[1]];
      EXPECT_FALSE(history.empty()) << "no price for " << line;
      if (history.empty()) continue;
      auto price_at = [&](int64_t t) {
        int64_t p = history.front().second;  // before the first change: the first price
        for (const auto& [from, price] : history) {
          if (from <= t) p = price;
        }
        return p;
      };
      std::vector<int64_t> cuts = {start};
      for (const auto& [from, price] : history) {
        if (from > start && from < end) cuts.push_back(from);
      }
      cuts.push_back(end);
      const int64_t span = end - start;
      for (size_t k = 0; k + 1 < cuts.size(); ++k) {
        const Wide part = span == 0 ? Wide{gpu_ms}
                                    : Wide{gpu_ms} * (cuts[k + 1] - start) / span -
                                          Wide{gpu_ms} * (cuts[k] - start) / span;
        numerators[f[0]] += part * price_at(cuts[k]);
      }
    }
    std::map<std::string, int64_t> out;
    for (const auto& [job, num] : numerators) {
      Wide q = num / 3'600'000;
      const Wide r = num % 3'600'000;
      if (2 * r > 3'600'000 || (2 * r == 3'600'000 && q % 2 == 1)) ++q;  // half to even
      out[job] = static_cast<int64_t>(q);
    }
    return out;
  }

  v1::Invoice Invoice(const std::string& period) {
    v1::GetInvoiceRequest req;
    req.set_tenant_id("acme");
    req.set_period(period);
    v1::Invoice inv;
    auto c = Ctx(stack_->IssueKey(v1::ROLE_FINANCE));
    grpc::Status s = stack_->Finance()->GetInvoice(c.get(), req, &inv);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return inv;
  }

  std::string Period() {
    return stack_->Sql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')");
  }

  void ExpectInvoiceMatchesRawTables() {
    const std::string period = Period();
    const v1::Invoice inv = Invoice(period);
    const auto expected = IndependentAmounts(period);
    int64_t total = 0;
    ASSERT_EQ(static_cast<size_t>(inv.lines_size()), expected.size());
    for (const auto& line : inv.lines()) {
      auto it = expected.find(line.job_id());
      ASSERT_NE(it, expected.end()) << line.job_id();
      EXPECT_EQ(line.amount_micros(), it->second) << line.job_id();
      EXPECT_GT(line.amount_micros(), 0);
      total += it->second;
    }
    EXPECT_EQ(inv.total_micros(), total);
  }

  // The job's log: the latest attempt's (0) or attempt `attempt`'s.
  v1::GetJobLogResponse Log(const std::string& id, int attempt = 0) {
    v1::GetJobLogRequest req;
    req.set_job_id(id);
    req.set_attempt(attempt);
    v1::GetJobLogResponse resp;
    auto c = Ctx(key_);
    grpc::Status s = stack_->Tenant()->GetJobLog(c.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << id << ": " << s.error_message();
    return resp;
  }

  std::string Metrics() {
    httplib::Client http("http://" + stack_->http());
    auto res = http.Get("/metrics");
    return res && res->status == 200 ? res->body : std::string();
  }

  std::unique_ptr<Stack> stack_;
  std::string key_;
};

TEST_F(E2e, JobsRunToTheirEndStatesWithLogsAndInvoice) {
  Start("lifecycle");
  stack_->StartWorker("node-a", 8);
  const std::string ok = Submit(ExecSpec("ok", {"/bin/sh", "-c", "echo hello from surplus; sleep 2"}, 1, "", 3'000'000));
  const std::string bad = Submit(ExecSpec("bad", {"/bin/sh", "-c", "echo failing >&2; sleep 1; exit 3"}, 0, "1g.10gb", 3'000'000));
  const std::string missing = Submit(ExecSpec("missing", {"/no/such/program"}, 0, "2g.20gb", 3'000'000));
  const std::string cancelled = Submit(ExecSpec("cancel", {"sleep", "60"}, 2, "", 3'000'000));

  EXPECT_EQ(Get(ok).state(), v1::JOB_STATE_PENDING);
  ASSERT_TRUE(WaitState(ok, v1::JOB_STATE_RUNNING, 15000)) << stack_->control_log();
  ASSERT_TRUE(WaitState(cancelled, v1::JOB_STATE_RUNNING, 15000));
  ASSERT_TRUE(Cancel(cancelled).ok());

  ASSERT_TRUE(WaitState(ok, v1::JOB_STATE_SUCCEEDED, 20000)) << Get(ok).reason();
  v1::Job okj = Get(ok);
  EXPECT_TRUE(okj.has_exit_code());
  EXPECT_EQ(okj.exit_code(), 0);
  ASSERT_TRUE(WaitState(bad, v1::JOB_STATE_FAILED, 20000)) << Get(bad).reason();
  EXPECT_EQ(Get(bad).exit_code(), 3);
  ASSERT_TRUE(WaitState(missing, v1::JOB_STATE_FAILED, 20000)) << Get(missing).reason();
  EXPECT_NE(Get(missing).reason().find("failed to start"), std::string::npos) << Get(missing).reason();
  ASSERT_TRUE(WaitState(cancelled, v1::JOB_STATE_CANCELLED, 20000)) << Get(cancelled).reason();

  // The log is readable through the CLI.
  bool logged = WaitFor(
      [&] {
        std::string out;
        RunCommand({CliBin(), "logs", ok}, &out, true,
                   {{"SURPLUS_ENDPOINT", stack_->endpoint()}, {"SURPLUS_API_KEY", key_}});
        return out.find("hello from surplus") != std::string::npos;
      },
      10000);
  EXPECT_TRUE(logged);

  for (const auto& id : {ok, bad, cancelled}) {
    ASSERT_TRUE(WaitFinalUsage(id, 20000)) << id;
    ExpectTiled(id);
  }
  // A whole GPU for ~2 s: 2 s x 7/7 x 1 GPU of GPU-ms, give or take start-up.
  int64_t ok_gpu_ms = 0;
  for (const auto& r : Records(ok)) ok_gpu_ms += r.gpu_ms;
  EXPECT_GE(ok_gpu_ms, 1900);
  EXPECT_LE(ok_gpu_ms, 4000);
  ExpectInvoiceMatchesRawTables();

  // An idle market writes its prices once, not every round (a round is 200 ms here).
  const std::string rows = stack_->Sql("SELECT count(*) FROM market_rounds");
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(stack_->Sql("SELECT count(*) FROM market_rounds"), rows);
  EXPECT_EQ(stack_->Sql("SELECT count(DISTINCT gpu_model) FROM market_rounds"), "1");

  // The leader read the store in full once and only changes afterwards.
  const std::string metrics = Metrics();
  EXPECT_NE(metrics.find("\nsurplus_scheduler_full_reads_total 1\n"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("\nsurplus_scheduler_rounds_total 1\n"), std::string::npos) << metrics;
}

TEST_F(E2e, AWorkerOnAnotherReplicaGetsItsJobsAtOnce) {
  Start("replicas");  // this replica leads the scheduling
  // The worker streams to a second replica that, left to itself, would resend desired jobs
  // to it only every 10 minutes: only a nudge through the database brings them sooner.
  const std::string follower = stack_->StartReplica({"--reconcile-interval-ms", "600000"});
  stack_->StartWorker("node-f", 8, {}, follower);
  ASSERT_TRUE(WaitFor([&] { return stack_->Sql("SELECT count(*) FROM nodes WHERE last_heartbeat_ms > 0") == "1"; },
                      15000));
  std::this_thread::sleep_for(std::chrono::seconds(1));  // past the stream's first reconcile
  const std::string job = Submit(ExecSpec("far", {"sleep", "60"}, 1, "", 3'000'000));
  ASSERT_TRUE(WaitFor([&] { return Get(job).reason() == "running on node-f"; }, 10000)) << Get(job).reason();
  // A cancel taken by the leading replica reaches the worker the same way.
  ASSERT_TRUE(Cancel(job).ok());
  ASSERT_TRUE(WaitState(job, v1::JOB_STATE_CANCELLED, 10000)) << Get(job).reason();
}

TEST_F(E2e, HigherBidPreemptsLowerWithNotice) {
  // Outbid at once: no minimum runtime (the default is a minute).
  Start("preempt", {"--preemption-notice-ms", "3000", "--min-runtime-before-preempt-ms", "0"});
  stack_->StartWorker("node-p", 1);
  const std::string marker = stack_->dir() + "/term-seen";
  // Traps SIGTERM, records the notice file it was given, then keeps running past the notice.
  const std::string script = absl::StrCat(
      "trap 'cat \"$SURPLUS_PREEMPT_NOTICE_FILE\" > ", marker, ".tmp; mv ", marker, ".tmp ", marker,
      "; sleep 60' TERM; while true; do sleep 0.1; done");
  const std::string low = Submit(ExecSpec("low", {"/bin/sh", "-c", script}, 1, "", 1'500'000));
  ASSERT_TRUE(WaitState(low, v1::JOB_STATE_RUNNING, 15000)) << stack_->control_log();
  // Quotes, before bidding: $9 would displace the running job; $1 is below the reserve.
  auto quote = [&](int64_t bid) {
    v1::GetQuoteRequest req;
    req.mutable_shape()->mutable_whole_gpus()->set_count(1);
    req.set_tier(v1::TIER_SPOT);
    req.set_bid_micros_per_gpu_hour(bid);
    v1::GetQuoteResponse resp;
    auto c = Ctx(key_);
    grpc::Status s = stack_->Tenant()->GetQuote(c.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  };
  const v1::GetQuoteResponse high_quote = quote(9'000'000);
  EXPECT_FALSE(high_quote.would_start_now());
  EXPECT_EQ(high_quote.would_preempt_jobs(), 1);
  EXPECT_NE(high_quote.reason().find("waiting for 1 preempted job"), std::string::npos) << high_quote.reason();
  EXPECT_EQ(high_quote.gpu_model(), "H100-80GB");
  // The market now turns nobody away: the reserve price. With the $9 bid in it, that bid
  // waits this round for the job it displaces to leave, so it is the highest turned away.
  EXPECT_EQ(high_quote.current_clearing_price_micros_per_gpu_hour(), kReserve);
  EXPECT_EQ(high_quote.clearing_price_micros_per_gpu_hour(), 9'000'000);
  const v1::GetQuoteResponse low_quote = quote(1'000'000);
  EXPECT_FALSE(low_quote.would_start_now());
  EXPECT_EQ(low_quote.would_preempt_jobs(), 0);
  EXPECT_NE(low_quote.reason().find("below reserve price $1.234567"), std::string::npos) << low_quote.reason();
  EXPECT_EQ(low_quote.clearing_price_micros_per_gpu_hour(), kReserve);
  EXPECT_EQ(Get(low).state(), v1::JOB_STATE_RUNNING);  // a quote changes nothing
  const std::string high = Submit(ExecSpec("high", {"sleep", "2"}, 1, "", 9'000'000));
  ASSERT_TRUE(WaitState(low, v1::JOB_STATE_PREEMPTED, 20000)) << Get(low).reason();
  EXPECT_NE(Get(low).reason().find("outbid"), std::string::npos) << Get(low).reason();
  // The job saw SIGTERM with its notice file before it was killed.
  EXPECT_FALSE(ReadFile(marker).empty());
  ASSERT_TRUE(WaitState(high, v1::JOB_STATE_SUCCEEDED, 20000)) << Get(high).reason();
  // The high bid paid the clearing price, never more than its bid.
  const v1::Job h = Get(high);
  EXPECT_LE(h.price_micros_per_gpu_hour(), 9'000'000);
  // Quotes follow the fleet: with the GPU free again, a bid at the reserve starts at once.
  v1::GetQuoteResponse free_quote;
  const auto quoted_until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  do {
    free_quote = quote(kReserve);
  } while (!free_quote.would_start_now() && std::chrono::steady_clock::now() < quoted_until);
  EXPECT_TRUE(free_quote.would_start_now()) << free_quote.reason();
  EXPECT_EQ(free_quote.price_micros_per_gpu_hour(), kReserve);
  EXPECT_EQ(free_quote.would_preempt_jobs(), 0);
  ASSERT_TRUE(WaitFinalUsage(high, 20000));
  ASSERT_TRUE(WaitFinalUsage(low, 20000));
  ExpectInvoiceMatchesRawTables();
}

TEST_F(E2e, BillingKilledMidRunLosesAndDoublesNothing) {
  Start("billing-kill");
  stack_->StartWorker("node-b", 2);
  const std::string id = Submit(ExecSpec("long", {"sleep", "5"}, 1, "", 3'000'000));
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_RUNNING, 15000));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  stack_->KillBilling();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  stack_->StartBilling();
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_SUCCEEDED, 20000)) << Get(id).reason();
  ASSERT_TRUE(WaitFinalUsage(id, 20000));
  const int64_t wall = ExpectTiled(id);
  // The whole run is metered once: about 5 s of one whole GPU.
  int64_t gpu_ms = 0;
  for (const auto& r : Records(id)) gpu_ms += r.gpu_ms;
  EXPECT_EQ(gpu_ms, wall);
  EXPECT_GE(gpu_ms, 4900);
  EXPECT_LE(gpu_ms, 7000);
  ExpectInvoiceMatchesRawTables();
}

TEST_F(E2e, ControlKilledRunningJobsFinish) {
  Start("control-kill");
  stack_->StartWorker("node-c", 2);
  const std::string id = Submit(ExecSpec("survivor", {"sleep", "4"}, 0, "3g.40gb", 3'000'000));
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_RUNNING, 15000));
  stack_->KillControl();
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  stack_->StartControl();
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_SUCCEEDED, 20000)) << Get(id).reason();
  EXPECT_EQ(Get(id).exit_code(), 0);
  ASSERT_TRUE(WaitFinalUsage(id, 20000));
  const int64_t wall = ExpectTiled(id);
  int64_t gpu_ms = 0;
  for (const auto& r : Records(id)) gpu_ms += r.gpu_ms;
  // 3g = 3 of 7 compute units: GPU-ms = wall x 3 / 7, truncated per record.
  EXPECT_NEAR(static_cast<double>(gpu_ms), static_cast<double>(wall) * 3 / 7, 10.0);
  EXPECT_GE(wall, 3900);
  ExpectInvoiceMatchesRawTables();
}

TEST_F(E2e, WorkerKilledJobsBecomeLostAndBillingStops) {
  Start("worker-kill", {"--lost-after-ms", "2500"});
  const int w = stack_->StartWorker("node-w", 1);
  const std::string id = Submit(ExecSpec("orphan", {"sleep", "15"}, 1, "", 3'000'000));
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_RUNNING, 15000));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  stack_->KillWorker(w);
  int64_t killed_ms = 0;
  ASSERT_TRUE(absl::SimpleAtoi(stack_->Sql("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"), &killed_ms));
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_LOST, 10000)) << Get(id).reason();
  // Billing ends at the last record the worker delivered; nothing after the kill.
  const std::string last_end = stack_->Sql("SELECT coalesce(max(end_ms), 0) FROM usage_records WHERE job_id = '" + id + "'");
  int64_t last = 0;
  ASSERT_TRUE(absl::SimpleAtoi(last_end, &last));
  EXPECT_LE(last, killed_ms);
  const v1::Invoice inv = Invoice(Period());
  int64_t billed_gpu_ms = 0;
  for (const auto& l : inv.lines()) billed_gpu_ms += l.gpu_ms();
  int64_t recorded = 0;
  for (const auto& r : Records(id)) recorded += r.gpu_ms;
  EXPECT_EQ(billed_gpu_ms, recorded);
  std::string out;
  RunCommand({"pkill", "-f", "sleep 15"}, &out);
}

// Milliseconds of the job's events whose reason contains `text` (in order).
std::vector<int64_t> EventTimes(const Stack& stack, const std::string& job, const std::string& text) {
  std::vector<int64_t> out;
  const std::string rows = stack.Sql("SELECT at_ms FROM job_events WHERE job_id = '" + job +
                                     "' AND reason LIKE '%" + text + "%' ORDER BY id");
  for (absl::string_view line : absl::StrSplit(rows, '\n', absl::SkipEmpty())) {
    int64_t v = 0;
    EXPECT_TRUE(absl::SimpleAtoi(line, &v)) << line;
    out.push_back(v);
  }
  return out;
}

// The owner takes GPUs back through OperatorService.ReclaimCapacity: the tenant job on
// them gets its notice at once and is requeued; hand them back and it runs again. A
// request that does not say which, names a GPU the node lacks, or a node that does not
// exist changes nothing.
TEST_F(E2e, ExplicitReclaimPreemptsAtOnceAndReleaseOffersAgain) {
  constexpr int64_t kNotice = 2000;
  Start("reclaim", {"--owner-idle-window-ms", "0", "--preemption-notice-ms", std::to_string(kNotice)});
  stack_->StartWorker("node-r", 2);
  v1::JobSpec spec = ExecSpec("tenant-job", {"sleep", "120"}, 2, "", 3'000'000);
  spec.set_requeue(true);
  const std::string id = Submit(spec);
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_RUNNING, 15000)) << Get(id).reason();

  auto reclaim = [&](const std::string& node, std::vector<int> gpus, v1::ReclaimAction action,
                     v1::ReclaimCapacityResponse* resp) {
    v1::ReclaimCapacityRequest req;
    req.set_node(node);
    for (int g : gpus) req.add_gpu_indices(g);
    req.set_action(action);
    auto c = Ctx(stack_->operator_key());
    return stack_->Operator()->ReclaimCapacity(c.get(), req, resp);
  };
  const std::string reclaimed = "SELECT string_agg(owner_reclaimed::text, ',' ORDER BY idx) FROM gpus WHERE node = 'node-r'";
  v1::ReclaimCapacityResponse resp;
  grpc::Status s = reclaim("node-r", {1}, v1::RECLAIM_ACTION_UNSPECIFIED, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("action"), std::string::npos) << s.error_message();
  s = reclaim("node-r", {1, 5}, v1::RECLAIM_ACTION_RECLAIM, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "gpu_indices: node 'node-r' has no GPU 5 (its GPUs are 0-1)");
  s = reclaim("node-x", {}, v1::RECLAIM_ACTION_RECLAIM, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "node 'node-x' not found");
  EXPECT_EQ(stack_->Sql(reclaimed), "false,false");
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_RUNNING);
  EXPECT_TRUE(EventTimes(*stack_, id, "preemption notice").empty());

  // GPU 1 taken back: the job, which runs on both, gets its notice in the same call.
  s = reclaim("node-r", {1}, v1::RECLAIM_ACTION_RECLAIM, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message() << stack_->control_log();
  ASSERT_EQ(resp.preempted_job_ids_size(), 1);
  EXPECT_EQ(resp.preempted_job_ids(0), id);
  EXPECT_EQ(stack_->Sql(reclaimed), "false,true");
  EXPECT_EQ(EventTimes(*stack_, id, "preemption notice").size(), 1u);
  ASSERT_TRUE(WaitFor([&] { return Get(id).state() == v1::JOB_STATE_PENDING; }, kNotice + 10000)) << Get(id).reason();
  const std::vector<int64_t> notices = EventTimes(*stack_, id, "preemption notice");
  const std::vector<int64_t> requeued = EventTimes(*stack_, id, "requeued");
  ASSERT_EQ(requeued.size(), 1u);
  EXPECT_LE(requeued[0] - notices[0], kNotice + 1000);
  // One GPU is not two: it waits while the owner holds GPU 1.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_PENDING) << Get(id).reason();

  // Handed back: offered again (the idle window is 0 here) and the job runs again.
  ASSERT_TRUE(reclaim("node-r", {1}, v1::RECLAIM_ACTION_RELEASE, &resp).ok());
  EXPECT_EQ(resp.preempted_job_ids_size(), 0);
  EXPECT_EQ(stack_->Sql(reclaimed), "false,false");
  ASSERT_TRUE(WaitFor([&] { return EventTimes(*stack_, id, "starting on").size() == 2; }, 20000)) << Get(id).reason();
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_RUNNING, 10000));
  EXPECT_EQ(Get(id).attempt(), 2);
  ASSERT_TRUE(Cancel(id).ok());
}

TEST_F(E2e, HarvestWindowOwnerLoadReclaimsWithNoticeAndRequeues) {
  constexpr int64_t kWindow = 2000;
  constexpr int64_t kNotice = 2000;
  Start("harvest", {"--owner-idle-window-ms", std::to_string(kWindow), "--preemption-notice-ms",
                    std::to_string(kNotice)});
  // The owner's processes appear on GPU 0 at 6 s and leave at 9 s after the worker starts.
  const std::string trace = stack_->dir() + "/owner.csv";
  WriteFile(trace, "t_ms,gpu_index,busy\n6000,0,1\n9000,0,0\n");
  stack_->StartWorker("node-h", 1, {"--owner-trace", trace});
  v1::JobSpec spec = ExecSpec("tenant-job", {"sleep", "120"}, 1, "", 3'000'000);
  spec.set_requeue(true);
  const std::string id = Submit(spec);
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_RUNNING, 15000)) << Get(id).reason();
  int64_t registered = 0;
  ASSERT_TRUE(absl::SimpleAtoi(stack_->Sql("SELECT registered_ms FROM nodes WHERE name = 'node-h'"), &registered));
  // Offered only once the owner had left the GPU idle for the window.
  const std::vector<int64_t> starts = EventTimes(*stack_, id, "starting on");
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_GE(starts[0] - registered, kWindow);

  // The owner comes back: the job gets a notice and is off the GPU within it, then waits.
  ASSERT_TRUE(WaitFor([&] { return Get(id).state() == v1::JOB_STATE_PENDING; }, 20000)) << Get(id).reason();
  EXPECT_EQ(EventTimes(*stack_, id, "was reclaimed by its owner").size(), 2u);  // notice, requeue
  const std::vector<int64_t> notices = EventTimes(*stack_, id, "preemption notice");
  const std::vector<int64_t> requeued = EventTimes(*stack_, id, "requeued");
  ASSERT_EQ(notices.size(), 1u);
  ASSERT_EQ(requeued.size(), 1u);
  EXPECT_LE(requeued[0] - notices[0], kNotice + 1000);

  // Idle again at 9 s: offered again only after the window, and the job runs again.
  ASSERT_TRUE(WaitFor([&] { return EventTimes(*stack_, id, "starting on").size() == 2; }, 20000))
      << Get(id).reason();
  int64_t idle_since = 0;
  ASSERT_TRUE(absl::SimpleAtoi(
      stack_->Sql("SELECT owner_idle_since_ms FROM gpus WHERE node = 'node-h' AND idx = 0"), &idle_since));
  EXPECT_GT(idle_since, notices[0]);
  EXPECT_GE(EventTimes(*stack_, id, "starting on")[1] - idle_since, kWindow);
  EXPECT_EQ(Get(id).attempt(), 2);

  // Each run has its own log: the first is complete, the latest is the second.
  ASSERT_TRUE(WaitFor([&] { return Log(id).data().find("attempt 2 on node-h") != std::string::npos; }, 10000));
  const v1::GetJobLogResponse first = Log(id, 1), latest = Log(id);
  EXPECT_NE(first.data().find("attempt 1 on node-h"), std::string::npos) << first.data();
  EXPECT_EQ(first.data().find("attempt 2"), std::string::npos) << first.data();
  EXPECT_TRUE(first.eof());
  EXPECT_EQ(latest.attempt(), 2);
  EXPECT_EQ(latest.data().find("attempt 1 on"), std::string::npos) << latest.data();
  EXPECT_FALSE(latest.eof());
  v1::GetJobLogRequest bad;
  bad.set_job_id(id);
  bad.set_attempt(3);
  v1::GetJobLogResponse none;
  auto c = Ctx(key_);
  EXPECT_EQ(stack_->Tenant()->GetJobLog(c.get(), bad, &none).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(E2e, UnhealthyGpuFailsOrRequeuesItsJobs) {
  Start("health");
  // Both GPUs of node-x raise XID 79 (fallen off the bus) 3 s after the worker starts.
  const std::string trace = stack_->dir() + "/faults.csv";
  WriteFile(trace, "3000,0,0,79\n3000,1,0,79\n");
  stack_->StartWorker("node-x", 2, {"--owner-trace", trace});
  const std::string plain = Submit(ExecSpec("plain", {"sleep", "120"}, 1, "", 3'000'000));
  v1::JobSpec spec = ExecSpec("requeue", {"sleep", "120"}, 1, "", 3'000'000);
  spec.set_requeue(true);
  const std::string again = Submit(spec);
  ASSERT_TRUE(WaitState(plain, v1::JOB_STATE_RUNNING, 15000)) << Get(plain).reason();
  ASSERT_TRUE(WaitState(again, v1::JOB_STATE_RUNNING, 15000)) << Get(again).reason();

  ASSERT_TRUE(WaitState(plain, v1::JOB_STATE_FAILED, 20000)) << Get(plain).reason();
  EXPECT_NE(Get(plain).reason().find("unhealthy"), std::string::npos) << Get(plain).reason();
  ASSERT_TRUE(WaitFor([&] { return Get(again).state() == v1::JOB_STATE_PENDING; }, 20000)) << Get(again).reason();
  EXPECT_EQ(EventTimes(*stack_, again, "requeued: GPU").size(), 1u);
  // Nothing is placed on the failed GPUs; the operator sees why.
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  EXPECT_EQ(Get(again).state(), v1::JOB_STATE_PENDING) << Get(again).reason();
  EXPECT_EQ(stack_->Sql("SELECT string_agg(health_reason, ',' ORDER BY idx) FROM gpus WHERE node = 'node-x'"),
            "XID 79 (simulated),XID 79 (simulated)");
  // A healthy node takes the requeued job.
  stack_->StartWorker("node-y", 1);
  ASSERT_TRUE(WaitState(again, v1::JOB_STATE_RUNNING, 20000)) << Get(again).reason();
  EXPECT_EQ(Get(again).placements(0).node(), "node-y");
  EXPECT_EQ(Get(again).attempt(), 2);
}

// The cuda backend of surplus-worker on a node whose "driver" is the fake NVML library
// (tests/gpu/fake_nvml.cc): the worker's real NVML code discovers the GPUs, tells the
// owner's processes from its jobs', and turns an XID into an unhealthy GPU, and the
// control plane acts on each; exec jobs on whole GPUs run, see their GPU by UUID, and are
// metered and invoiced like any other. Only CUDA itself is absent.
TEST_F(E2e, CudaBackendOnFakeNvmlHarvestsAndStopsOnXid) {
#ifndef SURPLUS_FAKE_NVML_PATH
  GTEST_SKIP() << "surplus-worker was built without the CUDA backend (no CUDA toolkit)";
#else
  constexpr int64_t kWindow = 1000;
  constexpr int64_t kNotice = 2000;
  Start("fakenvml", {"--owner-idle-window-ms", std::to_string(kWindow), "--preemption-notice-ms",
                     std::to_string(kNotice)});
  const std::string state = stack_->dir() + "/nvml-state.json";
  const std::string uuid[2] = {"GPU-0d1e2f30-0000-4000-8000-000000000000",
                               "GPU-0d1e2f30-0000-4000-8000-000000000001"};
  // owner[i]: the owner runs a process on GPU i; xid[i]: XIDs raised on GPU i.
  auto write_state = [&](const bool owner[2], const std::string xid[2]) {
    std::string gpus;
    for (int i = 0; i < 2; ++i) {
      absl::StrAppend(&gpus, i ? "," : "", R"({"name": "NVIDIA H100 80GB HBM3", "uuid": ")", uuid[i],
                      R"(", "memory_total_mib": 81559, "utilization": 0, "processes": [)",
                      owner[i] ? R"({"pid": 1, "used_mib": 40000})" : "", R"(], "xids": [)", xid[i], "]}");
    }
    WriteFile(state + ".tmp", "{\"gpus\": [" + gpus + "]}");
    std::filesystem::rename(state + ".tmp", state);
  };
  const bool idle[2] = {false, false};
  const std::string no_xid[2] = {"", ""};
  write_state(idle, no_xid);
  ::setenv("SURPLUS_FAKE_NVML_STATE", state.c_str(), 1);
  // --gpus says 1: the cuda backend counts the GPUs itself.
  stack_->StartWorker("node-c", 1, {"--backend", "cuda", "--nvml-library", SURPLUS_FAKE_NVML_PATH});
  ::unsetenv("SURPLUS_FAKE_NVML_STATE");
  ASSERT_TRUE(WaitFor([&] { return stack_->Sql("SELECT count(*) FROM gpus WHERE node = 'node-c'") == "2"; }, 15000))
      << stack_->control_log();
  EXPECT_EQ(stack_->Sql("SELECT gpu_model || ' ' || backend FROM nodes WHERE name = 'node-c'"), "H100-80GB cuda");
  EXPECT_EQ(stack_->Sql("SELECT string_agg(uuid, ',' ORDER BY idx) FROM gpus WHERE node = 'node-c'"),
            uuid[0] + "," + uuid[1]);

  const std::vector<std::string> argv = {"/bin/sh", "-c", "echo visible=$CUDA_VISIBLE_DEVICES; sleep 120"};
  v1::JobSpec spec = ExecSpec("requeued", argv, 1, "", 3'000'000);
  spec.set_requeue(true);
  const std::string a = Submit(spec);
  const std::string b = Submit(ExecSpec("failed", argv, 1, "", 3'000'000));
  ASSERT_TRUE(WaitState(a, v1::JOB_STATE_RUNNING, 15000)) << Get(a).reason();
  ASSERT_TRUE(WaitState(b, v1::JOB_STATE_RUNNING, 15000)) << Get(b).reason();
  const int ga = Get(a).placements(0).gpu_indices(0), gb = Get(b).placements(0).gpu_indices(0);
  ASSERT_NE(ga, gb);
  // Each job sees only its own GPU, named by UUID.
  EXPECT_TRUE(WaitFor([&] { return Log(a).data().find("visible=" + uuid[ga] + "\n") != std::string::npos; }, 10000))
      << Log(a).data();
  EXPECT_TRUE(WaitFor([&] { return Log(b).data().find("visible=" + uuid[gb] + "\n") != std::string::npos; }, 10000))
      << Log(b).data();

  // The owner starts a process on a's GPU: a gets its notice and is requeued; b runs on.
  bool owner[2] = {false, false};
  owner[ga] = true;
  write_state(owner, no_xid);
  ASSERT_TRUE(WaitFor([&] { return Get(a).state() == v1::JOB_STATE_PENDING; }, 20000)) << Get(a).reason();
  const std::vector<int64_t> notices = EventTimes(*stack_, a, "preemption notice");
  const std::vector<int64_t> requeued = EventTimes(*stack_, a, "requeued");
  ASSERT_EQ(notices.size(), 1u);
  ASSERT_EQ(requeued.size(), 1u);
  EXPECT_LE(requeued[0] - notices[0], kNotice + 1000);
  EXPECT_EQ(EventTimes(*stack_, a, "was reclaimed by its owner").size(), 2u);
  EXPECT_EQ(Get(b).state(), v1::JOB_STATE_RUNNING);

  // A hardware XID on b's GPU: the GPU is unhealthy, b fails, and nothing is placed there.
  std::string xid[2] = {"", ""};
  xid[gb] = "79";
  write_state(owner, xid);
  ASSERT_TRUE(WaitState(b, v1::JOB_STATE_FAILED, 20000)) << Get(b).reason();
  EXPECT_NE(Get(b).reason().find("unhealthy"), std::string::npos) << Get(b).reason();
  EXPECT_EQ(stack_->Sql("SELECT health_reason FROM gpus WHERE node = 'node-c' AND idx = " + std::to_string(gb)),
            "critical XID 79");

  // The owner leaves: after the window a runs again on its GPU, the only healthy one.
  owner[ga] = false;
  write_state(owner, xid);
  ASSERT_TRUE(WaitFor([&] { return EventTimes(*stack_, a, "starting on").size() == 2; }, 20000)) << Get(a).reason();
  ASSERT_TRUE(WaitState(a, v1::JOB_STATE_RUNNING, 10000));
  EXPECT_EQ(Get(a).attempt(), 2);
  EXPECT_EQ(Get(a).placements(0).gpu_indices(0), ga);
  ASSERT_TRUE(Cancel(a).ok());
  ASSERT_TRUE(WaitState(a, v1::JOB_STATE_CANCELLED, 20000)) << Get(a).reason();

  // Metered and invoiced like any other job: each attempt ends with its final record.
  ASSERT_TRUE(WaitFinalUsage(b, 20000)) << ReadFile(stack_->dir() + "/worker-node-c.log");
  EXPECT_GT(ExpectTiled(b), 0);
  const std::string finals = "SELECT string_agg(attempt::text, ',' ORDER BY attempt) FROM usage_records"
                             " WHERE final AND job_id = '" + a + "'";
  ASSERT_TRUE(WaitFor([&] { return stack_->Sql(finals) == "1,2"; }, 20000)) << stack_->Sql(finals);
  ExpectInvoiceMatchesRawTables();
#endif
}

// A node whose GPU 0 the operator put in MIG mode: the scheduler gives out exactly its
// instances (the job sees only its instance), never that GPU whole, and nothing the
// geometry lacks; when the operator changes the geometry, what is given out follows.
TEST_F(E2e, MigGpuGivesOutExactlyItsInstances) {
#ifndef SURPLUS_FAKE_NVML_PATH
  GTEST_SKIP() << "surplus-worker was built without the CUDA backend (no CUDA toolkit)";
#else
  Start("mig", {"--owner-idle-window-ms", "0"});
  const std::string state = stack_->dir() + "/nvml-state.json";
  // GPU 0 in MIG mode with a 3g.40gb at slot 4 and `other` (one more instance); GPU 1 whole.
  // Written to a temporary name and renamed into place, so the fake reads it whole.
  auto write_state = [&](const std::string& other) {
    WriteFile(state + ".tmp", R"({"gpus": [
    {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-aaaaaaaa-0000-4000-8000-000000000000",
     "mig_mode": true, "mig": [
       {"uuid": "MIG-aaaaaaaa-0000-4000-8000-000000000004", "profile": "3g.40gb", "gi_id": 2, "start": 4, "size": 4},
       )" + other + R"(]},
    {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-aaaaaaaa-0000-4000-8000-000000000001"}]})");
    std::filesystem::rename(state + ".tmp", state);
  };
  write_state(R"({"uuid": "MIG-aaaaaaaa-0000-4000-8000-000000000000", "profile": "2g.20gb", "gi_id": 3, "start": 0, "size": 2})");
  ::setenv("SURPLUS_FAKE_NVML_STATE", state.c_str(), 1);
  stack_->StartWorker("node-m", 2, {"--backend", "cuda", "--nvml-library", SURPLUS_FAKE_NVML_PATH});
  ::unsetenv("SURPLUS_FAKE_NVML_STATE");
  ASSERT_TRUE(WaitFor([&] { return stack_->Sql("SELECT count(*) FROM gpus WHERE node = 'node-m'") == "2"; }, 15000))
      << stack_->control_log();
  EXPECT_EQ(stack_->Sql("SELECT coalesce(mig_slices, 'none') FROM gpus WHERE node = 'node-m' ORDER BY idx"),
            "2g.20gb@0,3g.40gb@4\nnone");

  const std::vector<std::string> argv = {"/bin/sh", "-c", "echo visible=$CUDA_VISIBLE_DEVICES; sleep 120"};
  const std::string whole = Submit(ExecSpec("whole", argv, 1, "", 3'000'000));
  const std::string whole2 = Submit(ExecSpec("whole2", argv, 1, "", 3'000'000));
  const std::string three = Submit(ExecSpec("three", argv, 0, "3g.40gb", 3'000'000));
  const std::string four = Submit(ExecSpec("four", argv, 0, "4g.40gb", 3'000'000));
  ASSERT_TRUE(WaitState(whole, v1::JOB_STATE_RUNNING, 15000)) << Get(whole).reason();
  ASSERT_TRUE(WaitState(three, v1::JOB_STATE_RUNNING, 15000)) << Get(three).reason();
  EXPECT_EQ(Get(whole).placements(0).gpu_indices(0), 1);
  const v1::Job t = Get(three);
  EXPECT_EQ(t.placements(0).gpu_indices(0), 0);
  EXPECT_EQ(t.placements(0).slot_start(), 4);
  EXPECT_TRUE(WaitFor([&] { return Log(three).data().find("visible=MIG-aaaaaaaa-0000-4000-8000-000000000004\n") !=
                                   std::string::npos; }, 10000))
      << Log(three).data();
  EXPECT_NE(Log(three).data().find("isolation mig"), std::string::npos) << Log(three).data();
  // Several rounds later: the MIG GPU was not given out whole, and no 4g.40gb instance
  // exists to give; neither job failed at the worker.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(Get(whole2).state(), v1::JOB_STATE_PENDING) << Get(whole2).reason();
  EXPECT_EQ(Get(four).state(), v1::JOB_STATE_PENDING) << Get(four).reason();
  EXPECT_EQ(Get(four).reason(), "no 4g.40gb placement free") << Get(four).reason();

  // The operator replaces the 2g.20gb at slot 0 by a 4g.40gb while the worker runs (the
  // 3g.40gb with its job stays). The worker sees it in telemetry and registers the new
  // geometry; the scheduler then gives the new instance to the waiting 4g.40gb job, and
  // the running job keeps its instance.
  write_state(R"({"uuid": "MIG-aaaaaaaa-0000-4000-8000-0000000000f0", "profile": "4g.40gb", "gi_id": 5, "start": 0, "size": 4})");
  ASSERT_TRUE(WaitFor([&] { return stack_->Sql("SELECT mig_slices FROM gpus WHERE node = 'node-m' AND idx = 0") ==
                                   "4g.40gb@0,3g.40gb@4"; }, 15000))
      << stack_->Sql("SELECT mig_slices FROM gpus WHERE node = 'node-m' AND idx = 0");
  ASSERT_TRUE(WaitState(four, v1::JOB_STATE_RUNNING, 15000)) << Get(four).reason();
  EXPECT_EQ(Get(four).placements(0).gpu_indices(0), 0);
  EXPECT_EQ(Get(four).placements(0).slot_start(), 0);
  EXPECT_TRUE(WaitFor([&] { return Log(four).data().find("visible=MIG-aaaaaaaa-0000-4000-8000-0000000000f0\n") !=
                                   std::string::npos; }, 10000))
      << Log(four).data();
  EXPECT_EQ(Get(three).state(), v1::JOB_STATE_RUNNING) << Get(three).reason();
  EXPECT_EQ(Get(three).attempt(), 1);
  EXPECT_EQ(Get(whole2).state(), v1::JOB_STATE_PENDING) << Get(whole2).reason();
  for (const auto& id : {whole, three, four}) ASSERT_TRUE(Cancel(id).ok());
#endif
}

TEST_F(E2e, AJobsHostCpuAndMemoryBoundWhereItRuns) {
  Start("host");
  // A node offering 8 CPUs and 16 GiB to jobs: two GPUs, but not CPUs for two 6-CPU jobs.
  stack_->StartWorker("node-h", 2, {"--host-cpu-millis", "8000", "--host-memory-mib", "16384"});
  ASSERT_TRUE(WaitFor([&] { return stack_->Sql("SELECT cpu_millis || '/' || memory_mib FROM nodes WHERE name = 'node-h'") ==
                                   "8000/16384"; }, 15000))
      << stack_->control_log();
  auto host_spec = [&](const std::string& name, int64_t cpu_millis, int64_t memory_mib) {
    v1::JobSpec spec = ExecSpec(name, {"sleep", "120"}, 1, "", 3'000'000);
    spec.mutable_shape()->set_cpu_millis(cpu_millis);
    spec.mutable_shape()->set_memory_mib(memory_mib);
    return spec;
  };
  // What operators see the node's jobs hold of its host.
  auto held = [&] {
    v1::ListNodesResponse nodes;
    auto c = Ctx(stack_->operator_key());
    EXPECT_TRUE(stack_->Operator()->ListNodes(c.get(), v1::ListNodesRequest(), &nodes).ok());
    for (const v1::Node& n : nodes.nodes()) {
      if (n.name() == "node-h") return absl::StrCat(n.cpu_millis_used(), "/", n.memory_mib_used());
    }
    return std::string("no node-h");
  };
  // And what the pool's jobs hold of what its nodes offer, in GetCapacity and /metrics.
  auto pool_held = [&] {
    v1::GetCapacityResponse capacity;
    auto c = Ctx(stack_->operator_key());
    EXPECT_TRUE(stack_->Operator()->GetCapacity(c.get(), v1::GetCapacityRequest(), &capacity).ok());
    for (const v1::PoolCapacity& p : capacity.pools()) {
      if (p.gpu_model() == "H100-80GB") {
        return absl::StrCat(p.cpu_millis_used(), "/", p.cpu_millis_total(), " ", p.memory_mib_used(), "/",
                            p.memory_mib_total());
      }
    }
    return std::string("no H100-80GB pool");
  };
  auto metric = [&](const std::string& name, const std::string& state) {
    const std::string metrics = Metrics();
    const std::string key = absl::StrCat("\n", name, "{gpu_model=\"H100-80GB\",state=\"", state, "\"} ");
    const size_t at = metrics.find(key);
    if (at == std::string::npos) return std::string("absent");
    return metrics.substr(at + key.size(), metrics.find('\n', at + key.size()) - at - key.size());
  };
  EXPECT_EQ(held(), "0/0");
  EXPECT_EQ(pool_held(), "0/8000 0/16384");
  const std::string first = Submit(host_spec("first", 6000, 4096));
  ASSERT_TRUE(WaitState(first, v1::JOB_STATE_RUNNING, 15000)) << Get(first).reason();
  EXPECT_EQ(held(), "6000/4096");
  EXPECT_EQ(pool_held(), "6000/8000 4096/16384");
  EXPECT_EQ(metric("surplus_host_cpu_millis", "held"), "6000");
  EXPECT_EQ(metric("surplus_host_cpu_millis", "offered"), "8000");
  EXPECT_EQ(metric("surplus_host_memory_mib", "held"), "4096");
  EXPECT_EQ(metric("surplus_host_memory_mib", "offered"), "16384");
  const std::string second = Submit(host_spec("second", 6000, 0));
  const std::string too_big = Submit(host_spec("too-big", 0, 32768));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // several rounds
  EXPECT_EQ(Get(second).state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(Get(second).reason(), "no node with 1 free H100-80GB GPU and 6 CPUs free");
  EXPECT_EQ(Get(too_big).reason(), "no H100-80GB node has 32 GiB");
  EXPECT_EQ(Get(second).spec().shape().cpu_millis(), 6000);
  // The first job's CPUs come back when it ends: the second starts.
  ASSERT_TRUE(Cancel(first).ok());
  ASSERT_TRUE(WaitState(second, v1::JOB_STATE_RUNNING, 15000)) << Get(second).reason();
  // 6 CPUs asked; memory not asked, so its share: one GPU of two, half of 16 GiB.
  EXPECT_EQ(held(), "6000/8192");
  EXPECT_EQ(pool_held(), "6000/8000 8192/16384");
  EXPECT_EQ(metric("surplus_host_memory_mib", "held"), "8192");
  EXPECT_EQ(Get(too_big).state(), v1::JOB_STATE_PENDING);
  for (const auto& id : {second, too_big}) ASSERT_TRUE(Cancel(id).ok());
}

TEST_F(E2e, CordonKeepsJobsRunningDrainGivesThemNotice) {
  Start("drain", {"--preemption-notice-ms", "2000"});
  stack_->StartWorker("node-d", 1);
  const std::string id = Submit(ExecSpec("resident", {"sleep", "120"}, 1, "", 3'000'000));
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_RUNNING, 15000)) << Get(id).reason();
  auto cordon = [&](bool cordoned, bool drain) {
    v1::CordonNodeRequest req;
    req.set_node("node-d");
    req.set_cordoned(cordoned);
    req.set_drain(drain);
    v1::Node node;
    auto c = Ctx(stack_->operator_key());
    grpc::Status s = stack_->Operator()->CordonNode(c.get(), req, &node);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return node;
  };
  EXPECT_TRUE(cordon(true, false).cordoned());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // several rounds
  EXPECT_EQ(Get(id).state(), v1::JOB_STATE_RUNNING) << Get(id).reason();
  const v1::Node drained = cordon(true, true);
  EXPECT_TRUE(drained.draining());
  EXPECT_TRUE(drained.cordoned());
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_PREEMPTED, 15000)) << Get(id).reason();
  EXPECT_NE(Get(id).reason().find("drained"), std::string::npos) << Get(id).reason();
  // Uncordoned, the node takes work again.
  EXPECT_FALSE(cordon(false, false).draining());
  const std::string next = Submit(ExecSpec("next", {"sleep", "1"}, 1, "", 3'000'000));
  ASSERT_TRUE(WaitState(next, v1::JOB_STATE_SUCCEEDED, 20000)) << Get(next).reason();
}

TEST_F(E2e, ExecJobRunsInItsCgroupAsTheJobUser) {
  {
    auto probe = worker::JobCgroups::Open("/sys/fs/cgroup", "surplus-e2e-probe");
    if (!probe.ok()) GTEST_SKIP() << "no writable cgroups on this host: " << probe.status().message();
    for (const std::string& d : probe->Dirs("x")) ::rmdir(std::filesystem::path(d).parent_path().c_str());
  }
  if (::geteuid() != 0 || !worker::LookupJobUser("nobody").ok()) {
    GTEST_SKIP() << "running jobs as user 'nobody' needs root and that user";
  }
  Start("cgroups");
  // The job's user must reach its folder under the worker's state folder.
  ::chmod(stack_->dir().c_str(), 0755);
  const std::string node = "node-cg" + std::to_string(::getpid());
  stack_->StartWorker(node, 8, {"--job-cgroups", "on", "--job-user", "nobody"});
  const std::string id =
      Submit(ExecSpec("cg", {"/bin/sh", "-c", "cat /proc/self/cgroup; echo uid=$(id -u)"}, 0, "1g.10gb", 3'000'000));
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_SUCCEEDED, 20000)) << Get(id).reason();
  std::string log;
  ASSERT_TRUE(WaitFor(
      [&] {
        RunCommand({CliBin(), "logs", id}, &log, true, {{"SURPLUS_ENDPOINT", stack_->endpoint()}, {"SURPLUS_API_KEY", key_}});
        return log.find("uid=") != std::string::npos;
      },
      10000))
      << log;
  EXPECT_NE(log.find("/surplus-" + node + "/job-" + id), std::string::npos) << log;
  EXPECT_NE(log.find("uid=" + std::to_string(worker::LookupJobUser("nobody")->uid)), std::string::npos) << log;
  // 1g of an 8-GPU node: 1/56 of the node's CPUs and memory (with their floors).
  EXPECT_NE(log.find("limits: "), std::string::npos) << log;
  // A job that asks for host CPU and memory gets exactly that.
  v1::JobSpec asked = ExecSpec("cg-asked", {"/bin/true"}, 0, "1g.10gb", 3'000'000);
  asked.mutable_shape()->set_cpu_millis(500);
  asked.mutable_shape()->set_memory_mib(512);
  const std::string asked_id = Submit(asked);
  ASSERT_TRUE(WaitState(asked_id, v1::JOB_STATE_SUCCEEDED, 20000)) << Get(asked_id).reason();
  std::string asked_log;
  ASSERT_TRUE(WaitFor(
      [&] {
        RunCommand({CliBin(), "logs", asked_id}, &asked_log, true,
                   {{"SURPLUS_ENDPOINT", stack_->endpoint()}, {"SURPLUS_API_KEY", key_}});
        return asked_log.find("limits: ") != std::string::npos;
      },
      10000))
      << asked_log;
  EXPECT_NE(asked_log.find("limits: 0.50 CPUs, 512 MiB memory"), std::string::npos) << asked_log;
  // The job's groups are gone once it ended; the worker's parent group is left for reuse.
  for (const char* h : {"/sys/fs/cgroup/cpu/", "/sys/fs/cgroup/"}) {
    EXPECT_FALSE(std::filesystem::exists(std::string(h) + "surplus-" + node + "/job-" + id));
  }
  stack_.reset();  // workers stop
  for (const char* h : {"/sys/fs/cgroup/cpu/", "/sys/fs/cgroup/memory/", "/sys/fs/cgroup/"}) {
    ::rmdir((std::string(h) + "surplus-" + node).c_str());
  }
}

TEST_F(E2e, TlsEndToEnd) {
  Start("tls", {}, /*tls=*/true);
  // The worker reaches the control plane and billing over TLS, verifying their certificate.
  stack_->StartWorker("node-t", 1);
  const std::string id = Submit(ExecSpec("tls-job", {"sleep", "1"}, 1, "", 3'000'000));
  ASSERT_TRUE(WaitState(id, v1::JOB_STATE_SUCCEEDED, 20000)) << Get(id).reason();
  ASSERT_TRUE(WaitFinalUsage(id, 20000));
  // The CLI with the CA works; without it (plaintext) it cannot talk to a TLS port.
  std::string out;
  const std::map<std::string, std::string> env = {{"SURPLUS_ENDPOINT", stack_->endpoint()}, {"SURPLUS_API_KEY", key_}};
  EXPECT_EQ(RunCommand({CliBin(), "--tls-ca", stack_->tls_ca(), "job", id}, &out, true, env), 0) << out;
  EXPECT_NE(out.find("SUCCEEDED"), std::string::npos) << out;
  EXPECT_EQ(RunCommand({CliBin(), "--timeout", "3s", "job", id}, &out, true, env), 6) << out;
  // A server given only half of its TLS pair refuses to start, saying why.
  EXPECT_EQ(RunCommand({BillingBin(), "--listen", "127.0.0.1:1", "--tls-cert", stack_->tls_ca()}, &out, true), 2);
  EXPECT_NE(out.find("--tls-cert and --tls-key"), std::string::npos) << out;
}

}  // namespace
}  // namespace surplus::testing
