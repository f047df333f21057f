// surplus-bench submit: durable job submissions through the real API, over loopback.
//
// Against a running control plane (e.g. deploy/local/up.sh; SURPLUS_ENDPOINT and an
// operator SURPLUS_API_KEY from .surplus/local.env), it creates a tenant and then runs
// three phases, each for --seconds:
//   baseline   one client submitting back to back (no commit sharing possible);
//   saturated  --clients clients submitting back to back: the most submits/s;
//   half-load  the same clients paced to half the saturated rate: latency under load.
// Every submit is acknowledged only after its transaction committed (durable).

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "bench/api.h"
#include "bench/bench.h"
#include "bench/load.h"
#include "src/common/crypto.h"
#include "src/common/grpc_util.h"
#include "surplus/v1/operator.grpc.pb.h"
#include "surplus/v1/tenant.grpc.pb.h"

namespace surplus::bench {
namespace {
namespace v1 = surplus::v1;

// `clients` threads submit for `seconds` (paced to target_rate in all when > 0).
LoadResult RunPhase(const std::string& name, const std::vector<std::shared_ptr<grpc::Channel>>& channels,
                    const std::string& key, int clients, double seconds, double target_rate) {
  const std::string run = RandomHex(6);
  std::vector<std::unique_ptr<v1::TenantService::Stub>> stubs;
  for (int c = 0; c < clients; ++c) {
    stubs.push_back(v1::TenantService::NewStub(channels[static_cast<size_t>(c) % channels.size()]));
  }
  return RunLoad(name, clients, seconds, target_rate, [&](int c, int64_t i, std::string* error) {
    v1::SubmitJobRequest req;
    v1::JobSpec* spec = req.mutable_spec();
    spec->set_request_id(name + "-" + run + "-" + std::to_string(c) + "-" + std::to_string(i));
    spec->mutable_shape()->set_slice_profile("1g.10gb");
    spec->set_tier(v1::TIER_SPOT);
    spec->set_bid_micros_per_gpu_hour(1'500'000);
    spec->mutable_workload()->mutable_builtin()->set_kind(v1::BUILTIN_KIND_SLEEP);
    spec->mutable_workload()->mutable_builtin()->set_duration_ms(60'000);
    v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    AddBearer(&ctx, key);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status s = stubs[static_cast<size_t>(c)]->SubmitJob(&ctx, req, &resp);
    if (s.ok() && resp.created()) return true;
    *error = s.ok() ? "not created" : s.error_message();
    return false;
  });
}

}  // namespace

int RunSubmitBench(int argc, char** argv) {
  Flags flags(argc, argv);
  if (!flags.bad().empty() || flags.Has("help")) {
    std::fprintf(stderr,
                 "usage: surplus-bench submit [--endpoint HOST:PORT] [--api-key OPERATOR_KEY] [--clients 64]\n"
                 "                            [--seconds 10] [--channels 4] [--json]\n"
                 "endpoint and key default to SURPLUS_ENDPOINT and SURPLUS_API_KEY\n");
    return 2;
  }
  const char* env_endpoint = std::getenv("SURPLUS_ENDPOINT");
  const char* env_key = std::getenv("SURPLUS_API_KEY");
  const std::string endpoint = flags.Get("endpoint", env_endpoint ? env_endpoint : "127.0.0.1:50051");
  const std::string operator_key = flags.Get("api-key", env_key ? env_key : "");
  const int clients = static_cast<int>(flags.GetInt("clients", 64));
  const double seconds = static_cast<double>(flags.GetInt("seconds", 10));
  const int nchannels = static_cast<int>(flags.GetInt("channels", 4));
  const bool json = flags.Has("json");
  if (operator_key.empty()) {
    std::fprintf(stderr, "surplus-bench submit: an operator key is needed (--api-key or SURPLUS_API_KEY)\n");
    return 2;
  }
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < nchannels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("surplus.bench.channel", i);  // distinct channels, distinct connections
    channels.push_back(grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args));
  }
  // A tenant of its own, and its key.
  auto key = NewTenantKey(channels[0], operator_key, "bench-" + RandomHex(4));
  if (!key.ok()) {
    std::fprintf(stderr, "surplus-bench submit: %s\n", std::string(key.status().message()).c_str());
    return 1;
  }
  std::vector<LoadResult> results;
  results.push_back(RunPhase("baseline", channels, *key, 1, seconds, 0));
  results.push_back(RunPhase("saturated", channels, *key, clients, seconds, 0));
  results.push_back(RunPhase("half-load", channels, *key, clients, seconds, results[1].rate / 2));

  if (json) {
    Json out;
    out.Str("benchmark", "submit").Int("clients", clients).Num("seconds_per_phase", seconds);
    for (const auto& r : results) out.Obj(r.name, LoadJson(r, "submits_per_s", "clients"));
    out.Num("speedup_vs_baseline", results[0].rate > 0 ? results[1].rate / results[0].rate : 0);
    std::printf("%s\n", out.str().c_str());
    return 0;
  }
  std::printf("durable submits through %s, %.0f s per phase\n\n", endpoint.c_str(), seconds);
  std::vector<std::vector<std::string>> rows = {
      {"phase", "clients", "ok", "failed", "submits/s", "p50 ms", "p99 ms", "max ms"}};
  for (const auto& r : results) rows.push_back(LoadRow(r, true));
  PrintTable(rows);
  std::printf("\nsaturated vs baseline: %.1fx (group commit shares one WAL flush across concurrent submits)\n",
              results[0].rate > 0 ? results[1].rate / results[0].rate : 0);
  return 0;
}

}  // namespace surplus::bench
