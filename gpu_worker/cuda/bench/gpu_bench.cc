// surplus-gpu-bench: what the CUDA backend costs and how well its slices isolate, on one
// GPU of this node.
//
//   surplus-gpu-bench [--json] [--seconds S] [--size N] [--gpu I] [--state-dir DIR]
//
// Sections (targets in brackets):
//   overhead     full-GPU BF16 GEMM through the backend vs the same cuBLAS call bare  [< 5%]
//   slices       green-context slice of s SMs vs s/total of the full-GPU rate          [>= 90%]
//   concurrency  two slices at once vs each alone, a 1g pair and a 3g pair            [>= 95%]
//   telemetry    CPU cost of sampling at 10 Hz (getrusage, whole process)              [< 1% core]
//   latency      PrepareSlice to first GEMM kernel done, built-in job on a slice       [< 500 ms]
//   allreduce    NCCL all-reduce on one GPU (busbw is 0 by definition; algbw shown)
//
// SM clock and power are sampled from NVML during each run: a BF16 GEMM on a whole H100
// is power-bound, so a run on fewer SMs clocks higher, and "per clock" figures divide
// that out. Prints a table, or with --json one JSON object.

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gpu_worker/cuda/cuda_backend.h"
#include "gpu_worker/cuda/fill_kernels.h"
#include "gpu_worker/cuda/nvml_api.h"
#include "surplus/gpu_models.h"

namespace surplus::worker {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  bool json = false;
  double seconds = 5;
  int size = 8192;
  int gpu = 0;
  std::string state_dir = "/tmp/surplus-gpu-bench";
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "surplus-gpu-bench: %s\n", what.c_str());
  std::exit(1);
}

#define CHECK_CUDA(expr)                                                        \
  do {                                                                          \
    cudaError_t _rc = (expr);                                                   \
    if (_rc != cudaSuccess) Die(absl::StrCat(#expr, ": ", cudaGetErrorString(_rc))); \
  } while (0)
#define CHECK_CUBLAS(expr)                                                            \
  do {                                                                                \
    cublasStatus_t _rc = (expr);                                                      \
    if (_rc != CUBLAS_STATUS_SUCCESS) Die(absl::StrCat(#expr, ": status ", static_cast<int>(_rc))); \
  } while (0)

// The same BF16 GEMM the backend runs, called bare on the primary context: the baseline
// the backend's overhead is measured against.
double BareGemmTflops(int device, int n, double seconds) {
  CHECK_CUDA(cudaSetDevice(device));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const size_t elems = static_cast<size_t>(n) * n;
  void *a, *b, *c;
  CHECK_CUDA(cudaMalloc(&a, elems * 2));
  CHECK_CUDA(cudaMalloc(&b, elems * 2));
  CHECK_CUDA(cudaMalloc(&c, elems * 2));
  CHECK_CUDA(FillRandomBf16(a, elems, 1, stream));
  CHECK_CUDA(FillRandomBf16(b, elems, 2, stream));
  CHECK_CUDA(cudaMemsetAsync(c, 0, elems * 2, stream));
  cublasHandle_t h;
  CHECK_CUBLAS(cublasCreate(&h));
  CHECK_CUBLAS(cublasSetStream(h, stream));
  const float alpha = 1, beta = 0;
  auto gemm = [&] {
    CHECK_CUBLAS(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, CUDA_R_16BF, n, b,
                              CUDA_R_16BF, n, &beta, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
  };
  for (int i = 0; i < 3; ++i) gemm();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  CHECK_CUDA(cudaEventRecord(start, stream));
  int64_t count = 0;
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    for (int i = 0; i < 10; ++i) gemm();
    count += 10;
    // Keep the queue short so the wall-clock deadline means something.
    CHECK_CUDA(cudaEventRecord(stop, stream));
    if (count % 40 == 0) CHECK_CUDA(cudaEventSynchronize(stop));
  }
  CHECK_CUDA(cudaEventRecord(stop, stream));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
  cublasDestroy(h);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaStreamDestroy(stream);
  return count * 2.0 * n * static_cast<double>(n) * n / (ms / 1e3) / 1e12;
}

struct RunOutcome {
  BuiltinResult result;
  double running_after_ms = -1;  // PrepareSlice start to the "running" log line
  int sm_count = 0;
};

RunOutcome RunSlice(CudaBackend& backend, const std::string& job, const SliceRequest& base,
                    const std::string& kind, double seconds,
                    std::map<std::string, std::string> params = {}) {
  SliceRequest req = base;
  req.job_id = job;
  req.exec = false;
  RunOutcome out;
  const auto t0 = Clock::now();
  auto prepared = backend.PrepareSlice(req);
  if (!prepared.ok()) Die(absl::StrCat("PrepareSlice ", job, ": ", prepared.status().ToString()));
  out.sm_count = backend.SliceSmCount(job);
  BuiltinRequest br;
  br.kind = kind;
  br.duration_ms = static_cast<int64_t>(seconds * 1000);
  br.params = std::move(params);
  br.slice = req;
  std::atomic<bool> stop{false};
  std::mutex mu;
  auto log = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(mu);
    if (out.running_after_ms < 0 && line.find("running") != std::string::npos) {
      out.running_after_ms =
          std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    }
  };
  auto result = backend.RunBuiltin(br, stop, log);
  backend.ReleaseSlice(job);
  if (!result.ok()) Die(absl::StrCat("RunBuiltin ", job, ": ", result.status().ToString()));
  out.result = *result;
  return out;
}

SliceRequest SliceOf(const GpuModel& model, int gpu, const std::string& profile_name, int start) {
  const SliceProfile* p = model.FindProfile(profile_name);
  if (p == nullptr) Die(absl::StrCat("no profile ", profile_name, " on ", model.name));
  SliceRequest r;
  r.gpu_indices = {gpu};
  r.slice_profile = p->name;
  r.slot_start = start;
  r.sm_count = p->sm_count;
  r.compute_units = p->compute_units;
  r.memory_mib = p->memory_mib;
  return r;
}

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

// Mean SM clock and board power while a measurement runs, read from NVML at 20 Hz. GEMM
// on a whole H100 is power-bound, so clocks explain most differences between runs.
class ClockWatch {
 public:
  struct Mean {
    double sm_mhz = 0;
    double power_w = 0;
  };
  explicit ClockWatch(int gpu) {
    auto lib = NvmlLibrary::Load();
    if (!lib.ok()) return;
    nvml_ = *std::move(lib);
    if (nvml_->api().DeviceGetHandleByIndex(gpu, &device_) != kNvmlSuccess) device_ = nullptr;
  }
  void Begin() {
    End();
    stop_ = false;
    sum_mhz_ = sum_w_ = 0;
    n_ = 0;
    if (device_ == nullptr || nvml_->api().DeviceGetClockInfo == nullptr) return;
    thread_ = std::thread([this] {
      while (!stop_) {
        unsigned int mhz = 0, mw = 0;
        if (nvml_->api().DeviceGetClockInfo(device_, kNvmlClockSm, &mhz) == kNvmlSuccess &&
            nvml_->api().DeviceGetPowerUsage(device_, &mw) == kNvmlSuccess) {
          std::lock_guard<std::mutex> lock(mu_);
          sum_mhz_ += mhz;
          sum_w_ += mw / 1000.0;
          ++n_;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }
  Mean End() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(mu_);
    Mean m;
    if (n_ > 0) {
      m.sm_mhz = sum_mhz_ / n_;
      m.power_w = sum_w_ / n_;
    }
    return m;
  }
  ~ClockWatch() { End(); }

 private:
  std::unique_ptr<NvmlLibrary> nvml_;
  nvmlDevice_t device_ = nullptr;
  std::atomic<bool> stop_{true};
  std::thread thread_;
  std::mutex mu_;
  double sum_mhz_ = 0, sum_w_ = 0;
  int n_ = 0;
};

std::string Pass(bool ok) { return ok ? "met" : "MISSED"; }

int Main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    auto next = [&](const char* name) -> const char* {
      if (i + 1 >= argc) Die(absl::StrCat(name, " needs a value"));
      return argv[++i];
    };
    if (std::strcmp(argv[i], "--json") == 0) f.json = true;
    else if (std::strcmp(argv[i], "--seconds") == 0) f.seconds = std::atof(next("--seconds"));
    else if (std::strcmp(argv[i], "--size") == 0) f.size = std::atoi(next("--size"));
    else if (std::strcmp(argv[i], "--gpu") == 0) f.gpu = std::atoi(next("--gpu"));
    else if (std::strcmp(argv[i], "--state-dir") == 0) f.state_dir = next("--state-dir");
    else Die(absl::StrCat("unknown flag ", argv[i]));
  }

  CudaBackendOptions options;
  options.sample_interval = std::chrono::milliseconds(0);  // quiet baseline for telemetry
  options.state_dir = f.state_dir;
  auto backend_or = CudaBackend::Create(options);
  if (!backend_or.ok()) Die(backend_or.status().ToString());
  CudaBackend& backend = **backend_or;
  auto gpus = backend.Discover();
  if (!gpus.ok() || f.gpu >= static_cast<int>(gpus->size())) Die("no such GPU");
  const GpuTelemetry gpu = (*gpus)[f.gpu];
  const GpuModel* model = FindGpuModel(gpu.model);
  if (model == nullptr) Die(absl::StrCat("GPU model '", gpu.model, "' has no slice table"));
  const std::map<std::string, std::string> size_param = {{"size", absl::StrCat(f.size)}};

  ClockWatch watch(f.gpu);

  // 1. Overhead: interleaved so clock and thermal drift hit both sides alike.
  SliceRequest whole = SliceOf(*model, f.gpu, model->WholeGpu().name, 0);
  std::vector<double> bare, through, bare_mhz, through_mhz;
  for (int round = 0; round < 2; ++round) {
    watch.Begin();
    bare.push_back(BareGemmTflops(f.gpu, f.size, f.seconds));
    bare_mhz.push_back(watch.End().sm_mhz);
    watch.Begin();
    through.push_back(RunSlice(backend, absl::StrCat("full-", round), whole, "gemm", f.seconds,
                               size_param)
                          .result.metrics["tflops"]);
    through_mhz.push_back(watch.End().sm_mhz);
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / v.size();
  };
  const double bare_tflops = mean(bare), full_tflops = mean(through);
  const double full_mhz = mean(through_mhz);
  const double overhead_pct = (1 - full_tflops / bare_tflops) * 100;
  const int total_sms = model->sm_count;

  // 2. Green-context slices alone. ratio: slice rate / (full rate * sms / total);
  // per_clock: the same with both rates divided by their mean SM clock.
  struct SliceFigure {
    std::string profile;
    int sms = 0;
    double tflops = 0;
    double ratio = 0;
    double mhz = 0;
    double watts = 0;
    double per_clock = 0;
  };
  std::vector<SliceFigure> slice_figures;
  for (const char* name : {"1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb"}) {
    const SliceProfile* p = model->FindProfile(name);
    if (p == nullptr) continue;
    watch.Begin();
    RunOutcome o = RunSlice(backend, absl::StrCat("slice-", name), SliceOf(*model, f.gpu, name, 0),
                            "gemm", f.seconds, size_param);
    ClockWatch::Mean m = watch.End();
    SliceFigure s{name, o.sm_count, o.result.metrics["tflops"], 0, m.sm_mhz, m.power_w, 0};
    s.ratio = s.tflops / (full_tflops * s.sms / total_sms);
    s.per_clock = m.sm_mhz > 0 && full_mhz > 0 ? s.ratio * full_mhz / m.sm_mhz : 0;
    slice_figures.push_back(s);
  }

  // 3. Two slices at once vs each alone: a 1g pair (far from the power limit) and a 3g
  // pair (together nearly the whole GPU, so the shared power budget lowers clocks).
  struct PairFigure {
    std::string profile;
    int start[2] = {0, 0};
    int sms[2] = {0, 0};
    double alone[2] = {0, 0};
    double both[2] = {0, 0};
    double alone_mhz[2] = {0, 0};
    double both_mhz = 0;
    double ratio[2] = {0, 0};
    double per_clock[2] = {0, 0};
  };
  auto pair = [&](const std::string& profile, int start_a, int start_b) {
    PairFigure fig;
    fig.profile = profile;
    fig.start[0] = start_a;
    fig.start[1] = start_b;
    SliceRequest req[2] = {SliceOf(*model, f.gpu, profile, start_a),
                           SliceOf(*model, f.gpu, profile, start_b)};
    for (int i = 0; i < 2; ++i) {
      watch.Begin();
      RunOutcome o = RunSlice(backend, absl::StrCat("alone-", profile, "-", i), req[i], "gemm",
                              f.seconds, size_param);
      fig.alone_mhz[i] = watch.End().sm_mhz;
      fig.alone[i] = o.result.metrics["tflops"];
      fig.sms[i] = o.sm_count;
    }
    watch.Begin();
    std::thread threads[2];
    for (int i = 0; i < 2; ++i) {
      threads[i] = std::thread([&, i] {
        fig.both[i] = RunSlice(backend, absl::StrCat("both-", profile, "-", i), req[i], "gemm",
                               f.seconds, size_param)
                          .result.metrics["tflops"];
      });
    }
    for (auto& t : threads) t.join();
    fig.both_mhz = watch.End().sm_mhz;
    for (int i = 0; i < 2; ++i) {
      fig.ratio[i] = fig.both[i] / fig.alone[i];
      fig.per_clock[i] =
          fig.both_mhz > 0 ? fig.ratio[i] * fig.alone_mhz[i] / fig.both_mhz : 0;
    }
    return fig;
  };
  std::vector<PairFigure> pairs = {pair("1g.10gb", 0, 6), pair("3g.40gb", 0, 4)};

  // 4. Telemetry at 10 Hz: process CPU over a quiet window, minus an idle baseline.
  const double window_s = std::max(5.0, f.seconds * 2);
  double cpu0 = CpuSeconds();
  std::this_thread::sleep_for(std::chrono::duration<double>(window_s));
  const double idle_cpu = CpuSeconds() - cpu0;
  double sampled_cpu = 0;
  uint64_t samples = 0;
  {
    CudaBackendOptions t;
    t.sample_interval = std::chrono::milliseconds(100);
    t.init_cuda = false;
    t.state_dir = f.state_dir;
    auto sampler = CudaBackend::Create(t);
    if (!sampler.ok()) Die(sampler.status().ToString());
    const uint64_t s0 = (*sampler)->SamplesTaken();
    cpu0 = CpuSeconds();
    std::this_thread::sleep_for(std::chrono::duration<double>(window_s));
    sampled_cpu = CpuSeconds() - cpu0;
    samples = (*sampler)->SamplesTaken() - s0;
  }
  const double telemetry_pct = std::max(0.0, sampled_cpu - idle_cpu) / window_s * 100;
  const double per_sample_ms =
      samples > 0 ? std::max(0.0, sampled_cpu - idle_cpu) / samples * 1e3 : 0;

  // 5. Latency from assignment (PrepareSlice) to the first GEMM kernel done.
  std::vector<double> latencies;
  for (int i = 0; i < 5; ++i) {
    RunOutcome o = RunSlice(backend, absl::StrCat("latency-", i),
                            SliceOf(*model, f.gpu, "1g.10gb", i), "gemm", 0.2, size_param);
    latencies.push_back(o.running_after_ms);
  }
  std::vector<double> sorted = latencies;
  std::sort(sorted.begin(), sorted.end());

  // 6. All-reduce on this one GPU.
  RunOutcome ar = RunSlice(backend, "allreduce", whole, "allreduce", f.seconds,
                           {{"bytes", absl::StrCat(256 << 20)}});

  const bool overhead_ok = overhead_pct < 5;
  bool slices_ok = true;
  for (const auto& s : slice_figures) slices_ok = slices_ok && s.ratio >= 0.90;
  const bool telem_ok = telemetry_pct < 1;
  const bool lat_ok = sorted.back() < 500;
  auto pair_ok = [](const PairFigure& p) { return p.ratio[0] >= 0.95 && p.ratio[1] >= 0.95; };
  auto tf = [](bool b) { return b ? "true" : "false"; };

  if (f.json) {
    std::vector<std::string> sj;
    for (const auto& s : slice_figures) {
      sj.push_back(absl::StrFormat(
          R"({"profile":"%s","sms":%d,"tflops":%.1f,"ratio_of_scaled_full":%.3f,)"
          R"("sm_mhz":%.0f,"power_w":%.0f,"ratio_per_clock":%.3f,"met":%s})",
          s.profile, s.sms, s.tflops, s.ratio, s.mhz, s.watts, s.per_clock, tf(s.ratio >= 0.9)));
    }
    std::vector<std::string> pj;
    for (const auto& p : pairs) {
      pj.push_back(absl::StrFormat(
          R"({"profile":"%s","starts":[%d,%d],"sms":[%d,%d],"alone_tflops":[%.1f,%.1f],)"
          R"("both_tflops":[%.1f,%.1f],"ratio":[%.3f,%.3f],"alone_sm_mhz":[%.0f,%.0f],)"
          R"("both_sm_mhz":%.0f,"ratio_per_clock":[%.3f,%.3f],"target_ratio":0.95,"met":%s})",
          p.profile, p.start[0], p.start[1], p.sms[0], p.sms[1], p.alone[0], p.alone[1],
          p.both[0], p.both[1], p.ratio[0], p.ratio[1], p.alone_mhz[0], p.alone_mhz[1],
          p.both_mhz, p.per_clock[0], p.per_clock[1], tf(pair_ok(p))));
    }
    std::vector<std::string> lj;
    for (double l : latencies) lj.push_back(absl::StrFormat("%.1f", l));
    absl::PrintF(
        "{\"gpu\":\"%s\",\"model\":\"%s\",\"total_sms\":%d,\"gemm_size\":%d,\"seconds\":%.1f,"
        "\"overhead\":{\"bare_tflops\":%.1f,\"backend_tflops\":%.1f,\"overhead_pct\":%.2f,"
        "\"bare_sm_mhz\":%.0f,\"backend_sm_mhz\":%.0f,\"target_pct\":5,\"met\":%s},"
        "\"slices\":{\"full_tflops\":%.1f,\"full_sm_mhz\":%.0f,\"figures\":[%s],"
        "\"target_ratio\":0.9,\"met\":%s},"
        "\"concurrency\":[%s],"
        "\"telemetry\":{\"hz\":10,\"window_s\":%.1f,\"samples\":%d,\"idle_cpu_s\":%.4f,"
        "\"sampled_cpu_s\":%.4f,\"core_pct\":%.3f,\"cpu_ms_per_sample\":%.3f,\"target_pct\":1,"
        "\"met\":%s},"
        "\"latency_ms\":{\"trials\":[%s],\"median\":%.1f,\"max\":%.1f,\"target\":500,"
        "\"met\":%s},"
        "\"allreduce\":{\"gpus\":1,\"bytes\":%d,\"algbw_gbps\":%.1f,\"busbw_gbps\":%.1f,"
        "\"time_us\":%.1f}}\n",
        backend.DeviceName(f.gpu), model->name, total_sms, f.size, f.seconds, bare_tflops,
        full_tflops, overhead_pct, mean(bare_mhz), full_mhz, tf(overhead_ok), full_tflops,
        full_mhz, absl::StrJoin(sj, ","), tf(slices_ok), absl::StrJoin(pj, ","), window_s,
        samples, idle_cpu, sampled_cpu, telemetry_pct, per_sample_ms, tf(telem_ok),
        absl::StrJoin(lj, ","), sorted[2], sorted.back(), tf(lat_ok), 256 << 20,
        ar.result.metrics["algbw_gbps"], ar.result.metrics["busbw_gbps"],
        ar.result.metrics["time_us"]);
    return 0;
  }
  absl::PrintF("GPU %d: %s (%s, %d SMs), BF16 GEMM %d^3, %.1f s per run\n\n", f.gpu,
               backend.DeviceName(f.gpu), model->name, total_sms, f.size, f.seconds);
  absl::PrintF("%-48s %-28s %-10s %s\n", "measure", "figure", "target", "");
  absl::PrintF("%-48s %-28s\n", "gemm bare cuBLAS, full GPU",
               absl::StrFormat("%.1f TF/s @ %.0f MHz", bare_tflops, mean(bare_mhz)));
  absl::PrintF("%-48s %-28s\n", "gemm through the backend, full GPU",
               absl::StrFormat("%.1f TF/s @ %.0f MHz", full_tflops, full_mhz));
  absl::PrintF("%-48s %-28s %-10s %s\n", "backend overhead",
               absl::StrFormat("%.2f %%", overhead_pct), "< 5 %", Pass(overhead_ok));
  for (const auto& s : slice_figures) {
    absl::PrintF("%-48s %-28s %-10s %s\n",
                 absl::StrFormat("green slice %s (%d SMs) vs scaled full", s.profile, s.sms),
                 absl::StrFormat("%.1f TF/s = %.1f %% (%.1f %%/clk)", s.tflops, s.ratio * 100,
                                 s.per_clock * 100),
                 ">= 90 %", Pass(s.ratio >= 0.9));
  }
  for (const auto& p : pairs) {
    for (int i = 0; i < 2; ++i) {
      absl::PrintF("%-48s %-28s %-10s %s\n",
                   absl::StrFormat("%s@%d (%d SMs) with %s@%d / alone", p.profile, p.start[i],
                                   p.sms[i], p.profile, p.start[1 - i]),
                   absl::StrFormat("%.1f/%.1f = %.1f %% (%.1f %%/clk)", p.both[i], p.alone[i],
                                   p.ratio[i] * 100, p.per_clock[i] * 100),
                   ">= 95 %", Pass(p.ratio[i] >= 0.95));
    }
  }
  absl::PrintF("%-48s %-28s %-10s %s\n", "telemetry 10 Hz, CPU of one core",
               absl::StrFormat("%.3f %%", telemetry_pct), "< 1 %", Pass(telem_ok));
  absl::PrintF("%-48s %-28s %-10s %s\n", "assignment to first kernel, median (max)",
               absl::StrFormat("%.1f ms (%.1f)", sorted[2], sorted.back()), "< 500 ms",
               Pass(lat_ok));
  absl::PrintF("%-48s %-28s\n", "allreduce 256 MiB, 1 GPU: algbw (busbw = 0)",
               absl::StrFormat("%.1f GB/s", ar.result.metrics["algbw_gbps"]));
  return 0;
}

}  // namespace
}  // namespace surplus::worker

int main(int argc, char** argv) { return surplus::worker::Main(argc, argv); }
