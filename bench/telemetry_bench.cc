// surplus-bench telemetry: how many node telemetry reports per second the database path
// absorbs (the control plane's store and its group commit, no gRPC), against a real
// PostgreSQL. Every node reports every second, so reports/s is the fleet size one control
// plane database keeps up with.
//
// It adds --nodes nodes of --gpus GPUs (named tbench-N; removed at the end) to the database
// at --database-url (default SURPLUS_DATABASE_URL; migrated if needed) and runs, each for
// --seconds, with --threads threads (as many as the control plane's executor threads that
// handle worker streams):
//   one-per-tx    each report written in its own transaction (no group commit);
//   group-commit  reports written through the TelemetryBatcher, as surplus-control does;
//   fleet-1hz     group commit paced to --nodes reports/s: every node once a second;
//   fleet-1hz-drift  the same with figures that drift as a busy GPU's do.
// In the first three, each report moves every GPU's utilization and memory far enough that
// every GPU row is rewritten (the worst case, and what every report with moving figures
// cost before TelemetryWriteRule). In the drift phase they move by a point and a few
// hundred MiB per report, so a GPU row is rewritten when its figures are 10 s old. The
// batcher phases pass each report through the node's TelemetryWriteFilter first, as a
// worker stream in surplus-control does.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/bench.h"
#include "bench/load.h"
#include "src/api/batchers.h"
#include "src/common/grpc_util.h"
#include "src/store/migrations.h"
#include "src/store/node_store.h"
#include "src/store/pg_pool.h"

namespace surplus::bench {

int RunTelemetryBench(int argc, char** argv) {
  Flags flags(argc, argv);
  if (!flags.bad().empty() || flags.Has("help")) {
    std::fprintf(stderr,
                 "usage: surplus-bench telemetry [--database-url URL] [--nodes 10000] [--gpus 8] [--threads 16]\n"
                 "                               [--seconds 10] [--json]\n"
                 "the database URL defaults to SURPLUS_DATABASE_URL\n");
    return 2;
  }
  const char* env_url = std::getenv("SURPLUS_DATABASE_URL");
  const std::string url = flags.Get("database-url", env_url ? env_url : "");
  const int nodes = static_cast<int>(flags.GetInt("nodes", 10'000));
  const int gpus = static_cast<int>(flags.GetInt("gpus", 8));
  const int threads = static_cast<int>(flags.GetInt("threads", 16));
  const double seconds = static_cast<double>(flags.GetInt("seconds", 10));
  const bool json = flags.Has("json");
  if (url.empty() || nodes < 1 || gpus < 1 || threads < 1 || seconds <= 0) {
    std::fprintf(stderr, "surplus-bench telemetry: needs a database URL (--database-url or "
                         "SURPLUS_DATABASE_URL) and positive --nodes, --gpus, --threads, --seconds\n");
    return 2;
  }
  store::PgPool pool(url, threads + 2);
  if (auto migrated = store::Migrate(pool); !migrated.ok()) {
    std::fprintf(stderr, "surplus-bench telemetry: %s\n", migrated.status().ToString().c_str());
    return 1;
  }
  auto exec = [&](const std::string& sql) {
    return pool.Transact([&](pqxx::work& tx) { tx.exec(sql); });
  };
  const std::string add_nodes = absl::StrCat(
      "INSERT INTO nodes (name, gpu_model, registered_ms) SELECT 'tbench-' || i, 'H100-80GB', 1"
      " FROM generate_series(0, ", nodes - 1, ") AS i ON CONFLICT DO NOTHING;"
      " INSERT INTO gpus (node, idx, owner_idle_since_ms) SELECT 'tbench-' || i, g, 1"
      " FROM generate_series(0, ", nodes - 1, ") AS i, generate_series(0, ", gpus - 1,
      ") AS g ON CONFLICT DO NOTHING");
  const std::string remove_nodes = "DELETE FROM nodes WHERE name LIKE 'tbench-%'";
  if (absl::Status s = exec(add_nodes); !s.ok()) {
    std::fprintf(stderr, "surplus-bench telemetry: adding nodes: %s\n", s.ToString().c_str());
    return 1;
  }

  store::PgNodeStore store(pool);
  api::TelemetryBatcher batcher(store, 1024);
  // One filter per node, as one stream per node has (threads may share a node), with the
  // heartbeat period surplus-control uses by default (--lost-after-ms 10000).
  std::vector<store::TelemetryWriteFilter> filters(static_cast<size_t>(nodes),
                                                   store::TelemetryWriteFilter(2000, 10'000));
  std::vector<std::mutex> filter_mu(static_cast<size_t>(nodes));
  auto write = [&](const store::TelemetryReport& r, int64_t node) {
    std::lock_guard<std::mutex> lock(filter_mu[static_cast<size_t>(node)]);
    store::TelemetryWriteFilter& f = filters[static_cast<size_t>(node)];
    auto due = f.Due(r);
    if (!due) return absl::OkStatus();
    absl::Status s = batcher.AddAndWait(*due);
    if (s.ok()) {
      f.Written(*due);
    } else {
      f.Reset();
    }
    return s;
  };
  // Thread c reports for nodes c, c + threads, ...; `n` counts a node's reports.
  auto report = [&](int c, int64_t i, bool drift) {
    const int64_t k = c + (i * threads);
    const int64_t n = k / nodes;
    store::TelemetryReport r;
    r.node = absl::StrCat("tbench-", k % nodes);
    r.at_ms = NowMs();
    for (int g = 0; g < gpus; ++g) {
      auto* t = r.telemetry.add_gpus();
      t->set_index(g);
      t->set_healthy(true);
      if (drift) {  // moves by 1 point and 256 MiB a report, never a whole step
        t->set_utilization_pct(static_cast<int>(40 + (n + g) % 5));
        t->set_memory_used_mib(20'480 + 256 * ((n + g) % 8));
      } else {  // moves by 37 points and 9 GiB a report
        t->set_utilization_pct(static_cast<int>((n * 37 + g) % 100));
        t->set_memory_used_mib(1024 * ((n * 9 + g) % 80));
      }
    }
    return r;
  };
  auto check = [](const absl::Status& s, std::string* error) {
    if (!s.ok()) *error = s.ToString();
    return s.ok();
  };
  std::vector<LoadResult> results;
  results.push_back(RunLoad("one-per-tx", threads, seconds, 0, [&](int c, int64_t i, std::string* error) {
    store::TelemetryReport r = report(c, i, false);
    return check(store.RecordTelemetry(r.node, r.telemetry, r.at_ms), error);
  }));
  auto node_of = [&](int c, int64_t i) { return (c + i * threads) % nodes; };
  results.push_back(RunLoad("group-commit", threads, seconds, 0, [&](int c, int64_t i, std::string* error) {
    return check(write(report(c, i, false), node_of(c, i)), error);
  }));
  results.push_back(RunLoad("fleet-1hz", threads, seconds, nodes, [&](int c, int64_t i, std::string* error) {
    return check(write(report(c, i, false), node_of(c, i)), error);
  }));
  results.push_back(RunLoad("fleet-1hz-drift", threads, seconds, nodes, [&](int c, int64_t i, std::string* error) {
    return check(write(report(c, i, true), node_of(c, i)), error);
  }));
  (void)exec(remove_nodes);

  const double speedup = results[0].rate > 0 ? results[1].rate / results[0].rate : 0;
  if (json) {
    Json out;
    out.Str("benchmark", "telemetry").Int("nodes", nodes).Int("gpus_per_node", gpus).Int("threads", threads)
        .Num("seconds_per_phase", seconds);
    for (const auto& r : results) out.Obj(r.name, LoadJson(r, "reports_per_s"));
    out.Num("group_commit_speedup", speedup);
    std::printf("%s\n", out.str().c_str());
    return 0;
  }
  std::printf("telemetry reports of %d-GPU nodes into %d nodes, %d threads, %.0f s per phase\n\n", gpus, nodes,
              threads, seconds);
  std::vector<std::vector<std::string>> rows = {
      {"phase", "ok", "failed", "reports/s", "p50 ms", "p99 ms", "max ms"}};
  for (const auto& r : results) rows.push_back(LoadRow(r, false));
  PrintTable(rows);
  auto kept_up = [&](const LoadResult& r) {
    return r.rate >= 0.98 * nodes && r.failed == 0 ? "kept up" : "fell behind";
  };
  std::printf("\ngroup commit vs one transaction per report: %.1fx; every node once a second (%d reports/s): %s;"
              " with drifting figures: %s\n",
              speedup, nodes, kept_up(results[2]), kept_up(results[3]));
  return 0;
}

}  // namespace surplus::bench
