// surplus-worker: the node agent. Registers the node with the control plane, runs the
// jobs assigned to it in GPU slices, streams telemetry, status and logs, and delivers
// metered usage to billing. `--backend sim` simulates the GPUs (no GPU needed);
// `--backend cuda` drives real NVIDIA GPUs where the worker was built with CUDA.

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "gpu_worker/sim_backend.h"
#include "gpu_worker/worker.h"
#include "src/common/flags.h"
#include "src/common/logging.h"
#ifdef SURPLUS_HAVE_CUDA_BACKEND
#include "gpu_worker/cuda/cuda_backend.h"
#endif

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

std::string HostName() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"surplus-worker: runs Surplus jobs on this node's GPUs"};
  surplus::worker::WorkerOptions opt;
  opt.node = HostName();
  opt.state_dir = "./surplus-worker-state";
  std::string backend_name = "sim";
  std::string owner_trace;
  std::string nvml_library = "libnvidia-ml.so.1";
  std::string log_level = "info";
  bool log_json = false;

  app.add_option("--node", opt.node, "node name (default: the host name)");
  app.add_option("--gpu-model", opt.gpu_model, "GPU model of the node, e.g. H100-80GB");
  app.add_option("--gpus", opt.gpus, "number of GPUs (sim backend)")->check(CLI::Range(1, 64));
  app.add_option("--fabric", opt.fabric, "fabric label (gangs run on one fabric)");
  app.add_option("--backend", backend_name, "sim or cuda")->check(CLI::IsMember({"sim", "cuda"}));
  app.add_option("--control-endpoint", opt.control_endpoint, "control plane gRPC address (host:port)");
  app.add_option("--billing-endpoint", opt.billing_endpoint, "billing gRPC address (host:port)");
  app.add_option("--tls-ca", opt.tls_ca_file, "CA bundle to verify the servers with (default: plaintext)");
  app.add_option("--api-key", opt.api_key, "worker-role API key");
  app.add_option("--state-dir", opt.state_dir, "job folders, logs, usage spool and job records");
  app.add_option("--job-cgroups", opt.job_cgroups,
                 "one cgroup per exec job with its share of CPUs and memory: auto (where the host allows), on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  app.add_option("--cgroup-root", opt.cgroup_fs_root, "cgroup file system root");
  app.add_option("--job-user", opt.job_user, "run exec jobs as this unprivileged user (the worker runs as root)");
  app.add_option("--telemetry-ms", opt.telemetry_ms, "telemetry interval")->check(CLI::Range(50, 60'000));
  app.add_option("--host-cpu-millis", opt.host_cpu_millis,
                 "CPU offered to jobs, millicores (default: this host's CPUs)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  app.add_option("--host-memory-mib", opt.host_memory_mib,
                 "memory offered to jobs, MiB (default: this host's memory less a system reserve)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  app.add_option("--usage-interval-ms", opt.usage_interval_ms, "usage record interval")
      ->check(CLI::Range(100, 3'600'000));
  app.add_option("--shutdown-notice-ms", opt.shutdown_notice_ms,
                 "notice given to running jobs when the worker exits")->check(CLI::Range(0, 600'000));
  app.add_option("--owner-trace", owner_trace,
                 "sim: CSV t_ms,gpu_index,busy[,xid] replaying the owner's load (and injected XID errors) from the worker's start");
  app.add_option("--nvml-library", nvml_library,
                 "cuda: the NVML library to load (a path, or a name the loader finds)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off");
  app.add_flag("--log-json", log_json, "log one JSON object per line");
  surplus::BindEnvironment(app);
  CLI11_PARSE(app, argc, argv);
  surplus::InitLogging("worker", log_level, log_json);

  if (opt.api_key.empty()) {
    spdlog::error("--api-key (or SURPLUS_API_KEY) is required: a worker-role key");
    return 2;
  }

  std::unique_ptr<surplus::worker::GpuBackend> backend;
  surplus::worker::BackendHooks hooks;
  if (backend_name == "sim") {
    surplus::worker::SimBackendOptions sim;
    sim.node = opt.node;
    sim.gpu_model = opt.gpu_model;
    sim.gpus = opt.gpus;
    if (!owner_trace.empty()) {
      auto trace = surplus::worker::LoadOwnerTrace(owner_trace);
      if (!trace.ok()) {
        spdlog::error("--owner-trace: {}", trace.status().ToString());
        return 2;
      }
      sim.owner_trace = std::move(*trace);
    }
    auto created = surplus::worker::SimBackend::Create(std::move(sim));
    if (!created.ok()) {
      spdlog::error("sim backend: {}", created.status().ToString());
      return 2;
    }
    backend = std::move(*created);
  } else {
#ifdef SURPLUS_HAVE_CUDA_BACKEND
    if (!owner_trace.empty()) spdlog::warn("--owner-trace applies to the sim backend only; ignored");
    surplus::worker::CudaBackendOptions cuda;
    cuda.state_dir = opt.state_dir;
    cuda.nvml_library = nvml_library;
    // NVML is read at the telemetry rate, so each report carries a fresh sample.
    cuda.sample_interval = std::chrono::milliseconds(opt.telemetry_ms);
    auto created = surplus::worker::MakeCudaBackend(cuda);
    if (!created.ok()) {
      spdlog::error("cuda backend: {}", created.status().ToString());
      return 1;
    }
    backend = std::move(*created);
    if (auto* c = dynamic_cast<surplus::worker::CudaBackend*>(backend.get())) {
      hooks.count_owner_processes = [c](const surplus::worker::GpuTelemetry& g) {
        return static_cast<int>(c->OwnerProcesses(g).size());
      };
      hooks.on_job_process = [c](const std::string& job_id, pid_t pid) {
        c->RegisterJobProcess(job_id, pid);
      };
    }
    // The node's model and GPU count come from the hardware.
    auto gpus = backend->Discover();
    if (gpus.ok() && !gpus->empty()) {
      if (!(*gpus)[0].model.empty()) opt.gpu_model = (*gpus)[0].model;
      opt.gpus = static_cast<int>(gpus->size());
    }
#else
    spdlog::error("--backend cuda: this surplus-worker was built without CUDA support "
                  "(configure with -DSURPLUS_WITH_CUDA=ON on a machine with the CUDA toolkit)");
    return 2;
#endif
  }

  auto worker = surplus::worker::Worker::Create(opt, std::move(backend), std::move(hooks));
  if (!worker.ok()) {
    spdlog::error("{}", worker.status().ToString());
    return 1;
  }
  ::signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  absl::Status s = (*worker)->Run(g_stop);
  if (!s.ok()) {
    spdlog::error("{}", s.ToString());
    return 1;
  }
  return 0;
}
