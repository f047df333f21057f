// surplus-bench quote-api: quote latency through a running control plane on a fleet of
// fleet scale, end to end (gRPC, the replica's FleetMirror and its change-feed refresh).
//
// Against a running control plane with an empty database (e.g. deploy/local/up.sh
// --workers 0 on a fresh stack; SURPLUS_ENDPOINT, an operator SURPLUS_API_KEY and
// SURPLUS_DATABASE_URL from .surplus/local.env), it writes a fleet straight into the
// database: --nodes nodes of 8 H100 GPUs named qbench-N, kept alive by a heartbeat written
// every second; --running whole-GPU spot jobs running on them (bids $2.00-$5.90), and
// --pending more (bids $1.00-$1.99, below every running bid, so the scheduler places them
// where GPUs are free and preempts nothing). After --settle-s seconds (the scheduler takes
// the pending jobs in), it asks for quotes one after another, each of a random shape
// and bid:
//   first   the replica's first quote: it loads the whole fleet into its mirror;
//   quotes  --quotes more, each on a mirror at most 250 ms old.
// The fleet's rows stay behind: run it on a scratch stack (deploy/local/down.sh --wipe).

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/api.h"
#include "bench/bench.h"
#include "src/common/crypto.h"
#include "src/common/grpc_util.h"
#include "src/store/pg_pool.h"
#include "surplus/v1/tenant.grpc.pb.h"

namespace surplus::bench {
namespace {
namespace v1 = surplus::v1;
using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The fleet, written in a few set-based statements. Job i runs on GPU i % 8 of node i / 8.
std::vector<std::string> SeedSql(const std::string& tenant, int nodes, int running, int pending, int64_t now) {
  const std::string node_name = "'qbench-' || lpad((i / 8)::text, 5, '0')";
  return {
      absl::StrCat("INSERT INTO nodes (name, gpu_model, fabric, backend, registered_ms, last_heartbeat_ms)"
                   " SELECT 'qbench-' || lpad(i::text, 5, '0'), 'H100-80GB', 'fabric-' || (i / 32), 'sim', ",
                   now, ", ", now, " FROM generate_series(0, ", nodes - 1, ") AS i"),
      absl::StrCat("INSERT INTO gpus (node, idx, memory_total_mib, owner_idle_since_ms)"
                   " SELECT 'qbench-' || lpad(i::text, 5, '0'), g, 81920, 1"
                   " FROM generate_series(0, ", nodes - 1, ") AS i, generate_series(0, 7) AS g"),
      absl::StrCat("INSERT INTO jobs (id, tenant_id, request_id, spec_json, shape_kind, gpus_per_node, tier,"
                   " bid_micros, state, attempt, assigned_model, price_micros, created_ms, assigned_ms, started_ms)"
                   " SELECT 'qb-r-' || i, '", tenant, "', 'qb-r-' || i, '{}', 'gpus', 1, 'spot',"
                   " 2000000 + (i % 40) * 100000, 'RUNNING', 1, 'H100-80GB', 2000000, ", now - 3'600'000, ", ",
                   now - 3'600'000, ", ", now - 3'600'000, " FROM generate_series(0, ", running - 1, ") AS i"),
      absl::StrCat("INSERT INTO job_placements (job_id, attempt, node, gpu_indices, slice_profile)"
                   " SELECT 'qb-r-' || i, 1, ", node_name, ", (i % 8)::text, '7g.80gb'"
                   " FROM generate_series(0, ", running - 1, ") AS i"),
      absl::StrCat("INSERT INTO jobs (id, tenant_id, request_id, spec_json, shape_kind, gpus_per_node, tier,"
                   " bid_micros, state, created_ms)"
                   " SELECT 'qb-p-' || i, '", tenant, "', 'qb-p-' || i, '{}', 'gpus', 1, 'spot',"
                   " 1000000 + (i % 100) * 10000, 'PENDING', ", now, " FROM generate_series(0, ", pending - 1,
                   ") AS i"),
  };
}

v1::GetQuoteRequest RandomQuote(std::mt19937_64& rng) {
  v1::GetQuoteRequest req;
  const int r = static_cast<int>(rng() % 10);
  static const char* kSlices[] = {"1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb"};
  if (r < 4) {
    req.mutable_shape()->set_slice_profile(kSlices[rng() % 4]);
  } else {
    req.mutable_shape()->mutable_whole_gpus()->set_count(1 << (rng() % 4));
  }
  req.set_tier(rng() % 10 == 0 ? v1::TIER_ON_DEMAND : v1::TIER_SPOT);
  req.set_bid_micros_per_gpu_hour(static_cast<int64_t>(500'000 + (rng() % 56) * 100'000));  // $0.50-$6.00
  return req;
}

}  // namespace

int RunQuoteApiBench(int argc, char** argv) {
  Flags flags(argc, argv);
  if (!flags.bad().empty() || flags.Has("help")) {
    std::fprintf(stderr,
                 "usage: surplus-bench quote-api [--endpoint HOST:PORT] [--api-key OPERATOR_KEY] [--database-url URL]\n"
                 "                               [--nodes 10000] [--running 67000] [--pending 30000] [--quotes 200]\n"
                 "                               [--settle-s 20] [--json]\n"
                 "endpoint, key and database URL default to SURPLUS_ENDPOINT, SURPLUS_API_KEY and "
                 "SURPLUS_DATABASE_URL\n");
    return 2;
  }
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v ? v : "");
  };
  const std::string endpoint = flags.Get("endpoint", env("SURPLUS_ENDPOINT"));
  const std::string operator_key = flags.Get("api-key", env("SURPLUS_API_KEY"));
  const std::string url = flags.Get("database-url", env("SURPLUS_DATABASE_URL"));
  const int nodes = static_cast<int>(flags.GetInt("nodes", 10'000));
  const int running = static_cast<int>(flags.GetInt("running", 67'000));
  const int pending = static_cast<int>(flags.GetInt("pending", 30'000));
  const int quotes = static_cast<int>(flags.GetInt("quotes", 200));
  const int settle_s = static_cast<int>(flags.GetInt("settle-s", 20));
  const bool json = flags.Has("json");
  if (endpoint.empty() || operator_key.empty() || url.empty() || nodes < 1 || running < 1 ||
      running > 8 * nodes || pending < 1 || quotes < 1 || settle_s < 0) {
    std::fprintf(stderr, "surplus-bench quote-api: needs an endpoint, an operator key and a database URL, and "
                         "1 <= --running <= 8 x --nodes, --pending >= 1, --quotes >= 1\n");
    return 2;
  }
  auto channel = grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials());
  const std::string tenant = "qbench-" + RandomHex(4);
  auto key = NewTenantKey(channel, operator_key, tenant);
  if (!key.ok()) {
    std::fprintf(stderr, "surplus-bench quote-api: %s\n", std::string(key.status().message()).c_str());
    return 1;
  }
  store::PgPool pool(url, 2);
  const auto t_seed = Clock::now();
  absl::Status seeded = pool.Transact([&](pqxx::work& tx) {
    for (const std::string& sql : SeedSql(tenant, nodes, running, pending, NowMs())) tx.exec(sql);
  });
  if (!seeded.ok()) {
    std::fprintf(stderr, "surplus-bench quote-api: writing the fleet: %s\n", seeded.ToString().c_str());
    return 1;
  }
  const double seed_ms = MsSince(t_seed);
  // The fleet's workers, as far as the control plane can tell: a heartbeat every second.
  std::atomic<bool> stop{false};
  std::thread heartbeat([&] {
    while (!stop) {
      (void)pool.Transact([&](pqxx::work& tx) {
        tx.exec_params("UPDATE nodes SET last_heartbeat_ms = $1 WHERE name LIKE 'qbench-%'", NowMs());
      });
      for (int i = 0; i < 10 && !stop; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(settle_s));

  auto stub = v1::TenantService::NewStub(channel);
  std::mt19937_64 rng(1);
  int failed = 0, would_start = 0;
  std::string last_error;
  auto quote = [&]() {
    const v1::GetQuoteRequest req = RandomQuote(rng);
    v1::GetQuoteResponse resp;
    grpc::ClientContext ctx;
    AddBearer(&ctx, *key);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const auto t0 = Clock::now();
    grpc::Status s = stub->GetQuote(&ctx, req, &resp);
    const double ms = MsSince(t0);
    if (!s.ok()) {
      ++failed;
      last_error = s.error_message();
    } else if (resp.would_start_now()) {
      ++would_start;
    }
    return ms;
  };
  const double first_ms = quote();
  std::vector<double> times;
  for (int q = 0; q < quotes; ++q) times.push_back(quote());
  stop = true;
  heartbeat.join();
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double p99 = times[std::min(times.size() - 1, times.size() * 99 / 100)];

  if (json) {
    Json out;
    out.Str("bench", "quote-api")
        .Int("nodes", nodes)
        .Int("running_jobs", running)
        .Int("pending_jobs", pending)
        .Num("seed_ms", seed_ms)
        .Num("first_quote_ms", first_ms)
        .Int("quotes", quotes)
        .Num("quote_ms_median", median)
        .Num("quote_ms_p99", p99)
        .Num("quote_ms_max", times.back())
        .Int("would_start", would_start)
        .Int("failed", failed);
    std::printf("%s\n", out.str().c_str());
  } else {
    std::printf("quotes through %s: %d nodes x 8 H100, %d jobs running and %d pending written (%.0f ms)\n\n",
                endpoint.c_str(), nodes, running, pending, seed_ms);
    PrintTable({
        {"quote", "count", "median ms", "p99 ms", "max ms"},
        {"first (loads the mirror)", "1", Fmt(first_ms, 1), "", ""},
        {"then", std::to_string(quotes), Fmt(median, 2), Fmt(p99, 2), Fmt(times.back(), 2)},
    });
    std::printf("\n%d would start now; %d failed%s%s\n", would_start, failed, failed ? ": " : "", last_error.c_str());
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace surplus::bench
