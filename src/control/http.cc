#include "src/control/http.h"

#include <httplib.h>

#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "billing/render.h"
#include "src/api/capacity.h"
#include "src/store/auth_store.h"

namespace surplus::control {
namespace v1 = surplus::v1;

namespace {

constexpr char kDashboard[] = R"html(<!doctype html>
<html><head><meta charset="utf-8"><title>Surplus capacity</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}.gpu{display:inline-block;width:14px;height:14px;margin:1px;border-radius:2px}
.IDLE{background:#9be39b}.SOLD{background:#4a7bd1}.OWNER_BUSY{background:#e0a030}.UNAVAILABLE{background:#bbb}
</style></head><body>
<h1>Surplus capacity</h1><p id="asof"></p>
<table id="pools"><thead><tr><th>GPU model</th><th>GPUs</th><th>owner busy</th><th>unavailable</th>
<th>units offered</th><th>units sold</th><th>clearing $/GPU-h</th><th>reserve $/GPU-h</th><th>pending</th><th>running</th>
<th>host CPUs held</th><th>host GiB held</th></tr></thead><tbody></tbody></table>
<h2>Nodes</h2><div id="nodes"></div>
<p><span class="gpu IDLE"></span> idle <span class="gpu SOLD"></span> sold <span class="gpu OWNER_BUSY"></span> owner busy
<span class="gpu UNAVAILABLE"></span> unavailable</p>
<script>
const usd = m => '$' + (m / 1e6).toFixed(2);
const held = (used, total, scale) => (used / scale).toFixed(1) + ' / ' + (total > 0 ? (total / scale).toFixed(1) : '-');
async function refresh() {
  const r = await fetch('/api/capacity'); const c = await r.json();
  document.getElementById('asof').textContent = 'as of ' + new Date(c.as_of_ms).toISOString();
  const tb = document.querySelector('#pools tbody'); tb.innerHTML = '';
  for (const p of c.pools) {
    const tr = document.createElement('tr');
    for (const v of [p.gpu_model, p.gpus_total, p.gpus_owner_busy, p.gpus_unavailable, p.units_offered,
                     p.units_sold, usd(p.clearing_micros), usd(p.reserve_micros), p.jobs_pending, p.jobs_running,
                     held(p.cpu_millis_used, p.cpu_millis_total, 1000), held(p.memory_mib_used, p.memory_mib_total, 1024)]) {
      const td = document.createElement('td'); td.textContent = v; tr.appendChild(td);
    }
    tb.appendChild(tr);
  }
  const nd = document.getElementById('nodes'); nd.innerHTML = '';
  for (const n of c.nodes) {
    const div = document.createElement('div');
    div.textContent = n.name + (n.lost ? ' (lost)' : '') + (n.draining ? ' (draining)' : n.cordoned ? ' (cordoned)' : '') + ' ';
    for (const g of n.gpus) { const s = document.createElement('span'); s.className = 'gpu ' + g.use; s.title = 'GPU ' + g.index + ': ' + g.use; div.appendChild(s); }
    nd.appendChild(div);
  }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
)html";

const char* UseName(v1::GpuUse u) {
  switch (u) {
    case v1::GPU_USE_IDLE: return "IDLE";
    case v1::GPU_USE_SOLD: return "SOLD";
    case v1::GPU_USE_OWNER_BUSY: return "OWNER_BUSY";
    default: return "UNAVAILABLE";
  }
}

}  // namespace

HttpServer::HttpServer(api::ApiContext& ctx, const LoopStats& stats)
    : ctx_(ctx), stats_(stats), server_(std::make_unique<httplib::Server>()) {
  server_->Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
    auto v = ctx_.market->ReservePrices();
    if (v.ok()) {
      res.set_content("ok\n", "text/plain");
    } else {
      res.status = 503;
      res.set_content("database unavailable\n", "text/plain");
    }
  });
  server_->Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kDashboard, "text/html; charset=utf-8");
  });
  server_->Get("/api/capacity", [this](const httplib::Request&, httplib::Response& res) {
    const int64_t now = NowMs();
    auto view = api::LoadCapacity(ctx_, now);
    if (!view.ok()) {
      res.status = 503;
      res.set_content("{\"error\":\"database unavailable\"}", "application/json");
      return;
    }
    std::string nodes_json;
    for (const auto& n : view->nodes) {
      std::string gpus;
      for (const auto& g : n.gpus()) {
        absl::StrAppend(&gpus, gpus.empty() ? "" : ",", "{\"index\":", g.index(), ",\"use\":\"", UseName(g.use()),
                        "\",\"utilization_pct\":", g.utilization_pct(), "}");
      }
      absl::StrAppend(&nodes_json, nodes_json.empty() ? "" : ",", "{\"name\":", billing::JsonString(n.name()),
                      ",\"gpu_model\":", billing::JsonString(n.gpu_model()), ",\"lost\":", n.lost() ? "true" : "false",
                      ",\"cordoned\":", n.cordoned() ? "true" : "false", ",\"draining\":",
                      n.draining() ? "true" : "false", ",\"gpus\":[", gpus, "]}");
    }
    std::string pools_json;
    for (const auto& p : view->capacity.pools()) {
      absl::StrAppend(&pools_json, pools_json.empty() ? "" : ",", "{\"gpu_model\":", billing::JsonString(p.gpu_model()),
                      ",\"gpus_total\":", p.gpus_total(), ",\"gpus_owner_busy\":", p.gpus_owner_busy(),
                      ",\"gpus_unavailable\":", p.gpus_unavailable(), ",\"units_offered\":", p.units_offered(),
                      ",\"units_sold\":", p.units_sold(), ",\"clearing_micros\":",
                      p.clearing_price_micros_per_gpu_hour(), ",\"reserve_micros\":",
                      p.reserve_price_micros_per_gpu_hour(), ",\"jobs_pending\":", p.jobs_pending(),
                      ",\"jobs_running\":", p.jobs_running(), ",\"cpu_millis_total\":", p.cpu_millis_total(),
                      ",\"cpu_millis_used\":", p.cpu_millis_used(), ",\"memory_mib_total\":", p.memory_mib_total(),
                      ",\"memory_mib_used\":", p.memory_mib_used(), "}");
    }
    res.set_content(absl::StrCat("{\"as_of_ms\":", now, ",\"pools\":[", pools_json, "],\"nodes\":[", nodes_json, "]}"),
                    "application/json");
  });
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    std::string out;
    absl::StrAppend(&out, "# HELP surplus_scheduler_leader 1 when this replica runs the scheduling loop.\n",
                    "# TYPE surplus_scheduler_leader gauge\nsurplus_scheduler_leader ", stats_.leader ? 1 : 0, "\n");
    absl::StrAppend(&out, "# HELP surplus_scheduler_rounds_total Scheduling rounds completed.\n",
                    "# TYPE surplus_scheduler_rounds_total counter\nsurplus_scheduler_rounds_total ",
                    stats_.rounds.load(), "\n");
    absl::StrAppend(&out, "# HELP surplus_scheduler_round_duration_ms Duration of the last round.\n",
                    "# TYPE surplus_scheduler_round_duration_ms gauge\nsurplus_scheduler_round_duration_ms ",
                    stats_.last_round_ms.load(), "\n");
    absl::StrAppend(&out,
                    "# HELP surplus_scheduler_round_phase_ms Duration of each phase of the last round.\n"
                    "# TYPE surplus_scheduler_round_phase_ms gauge\n",
                    "surplus_scheduler_round_phase_ms{phase=\"read\"} ", stats_.last_read_ms.load(), "\n",
                    "surplus_scheduler_round_phase_ms{phase=\"schedule\"} ", stats_.last_schedule_ms.load(), "\n",
                    "surplus_scheduler_round_phase_ms{phase=\"persist\"} ", stats_.last_persist_ms.load(), "\n");
    absl::StrAppend(&out,
                    "# HELP surplus_scheduler_changed_rows Rows the last round read from the change feed.\n"
                    "# TYPE surplus_scheduler_changed_rows gauge\nsurplus_scheduler_changed_rows ",
                    stats_.last_changed_rows.load(), "\n",
                    "# HELP surplus_scheduler_full_reads_total Rounds that rebuilt the scheduler from a full read.\n"
                    "# TYPE surplus_scheduler_full_reads_total counter\nsurplus_scheduler_full_reads_total ",
                    stats_.full_reads.load(), "\n");
    absl::StrAppend(&out, "# TYPE surplus_scheduler_assignments_total counter\nsurplus_scheduler_assignments_total ",
                    stats_.assignments.load(), "\n");
    absl::StrAppend(&out, "# TYPE surplus_scheduler_preemptions_total counter\nsurplus_scheduler_preemptions_total ",
                    stats_.preemptions.load(), "\n");
    absl::StrAppend(&out, "# HELP surplus_database_up 1 while the database answers.\n",
                    "# TYPE surplus_database_up gauge\nsurplus_database_up ", ctx_.pool->Down() ? 0 : 1, "\n");
    auto prices = ctx_.market->LatestPrices();
    if (prices.ok()) {
      absl::StrAppend(&out, "# HELP surplus_clearing_price_micros Clearing price per GPU-hour, micro-dollars.\n",
                      "# TYPE surplus_clearing_price_micros gauge\n");
      for (const auto& [model, p] : *prices) {
        absl::StrAppend(&out, "surplus_clearing_price_micros{gpu_model=\"", model, "\"} ", p.clearing, "\n");
      }
      absl::StrAppend(&out, "# TYPE surplus_capacity_units gauge\n");
      for (const auto& [model, p] : *prices) {
        absl::StrAppend(&out, "surplus_capacity_units{gpu_model=\"", model, "\",state=\"offered\"} ",
                        p.capacity_units, "\n", "surplus_capacity_units{gpu_model=\"", model, "\",state=\"sold\"} ",
                        p.used_units, "\n");
      }
    }
    // Host CPU and memory per pool: what the nodes offer and what running jobs hold.
    auto nodes = ctx_.nodes->ListNodes(ctx_.config.harvest, NowMs());
    if (nodes.ok()) {
      std::map<std::string, v1::PoolCapacity> host;
      for (const v1::Node& n : *nodes) api::AddNodeHost(n, &host[n.gpu_model()]);
      // One gauge family per resource: offered and held, per GPU model.
      auto family = [&](const char* name, const char* what, auto offered, auto held) {
        absl::StrAppend(&out, "# HELP ", name, " Host ", what,
                        " of the pool's nodes: offered to jobs (nodes of unknown size count 0) and held by"
                        " running jobs.\n# TYPE ",
                        name, " gauge\n");
        for (const auto& [model, p] : host) {
          absl::StrAppend(&out, name, "{gpu_model=\"", model, "\",state=\"offered\"} ", offered(p), "\n", name,
                          "{gpu_model=\"", model, "\",state=\"held\"} ", held(p), "\n");
        }
      };
      family("surplus_host_cpu_millis", "CPU, millicores,",
             [](const v1::PoolCapacity& p) { return p.cpu_millis_total(); },
             [](const v1::PoolCapacity& p) { return p.cpu_millis_used(); });
      family("surplus_host_memory_mib", "memory, MiB,",
             [](const v1::PoolCapacity& p) { return p.memory_mib_total(); },
             [](const v1::PoolCapacity& p) { return p.memory_mib_used(); });
    }
    res.set_content(out, "text/plain; version=0.0.4");
  });
}

HttpServer::~HttpServer() { Stop(); }

bool HttpServer::Start(const std::string& listen) {
  const auto colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port)) return false;
  std::string host = listen.substr(0, colon);
  if (!server_->bind_to_port(host.c_str(), port)) return false;
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return true;
}

void HttpServer::Stop() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace surplus::control
