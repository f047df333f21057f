#pragma once
// A load phase for the benchmarks that drive a running system: `threads` threads call one
// operation for a number of seconds, back to back (closed loop) or paced to a total rate
// (open loop: each call's latency counts from its slot, so falling behind shows).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench.h"

namespace surplus::bench {

struct LoadResult {
  std::string name;
  int threads = 0;
  int64_t ok = 0;
  int64_t failed = 0;
  double seconds = 0;
  double rate = 0;  ///< successful operations per second
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
};

inline double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

/// One operation: thread number, its call number; returns false with `error` set when the
/// call failed.
using LoadOp = std::function<bool(int thread, int64_t call, std::string* error)>;

/// Runs `op` from `threads` threads for `seconds`; `target_rate` > 0 paces them to that many
/// calls per second in all.
inline LoadResult RunLoad(const std::string& name, int threads, double seconds, double target_rate,
                          const LoadOp& op) {
  using Clock = std::chrono::steady_clock;
  std::atomic<int64_t> ok{0}, failed{0};
  std::mutex mu;
  std::vector<double> latencies;
  std::string first_error;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> pool;
  for (int c = 0; c < threads; ++c) {
    pool.emplace_back([&, c] {
      std::vector<double> mine;
      const double interval = target_rate > 0 ? threads / target_rate : 0;  // seconds
      auto next = start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(interval * c / threads));
      for (int64_t i = 0;; ++i) {
        if (interval > 0) std::this_thread::sleep_until(next);
        const auto t0 = interval > 0 ? next : Clock::now();
        if (t0 >= end) break;
        std::string error;
        const bool good = op(c, i, &error);
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        if (good) {
          ++ok;
          mine.push_back(ms);
        } else {
          ++failed;
          std::lock_guard<std::mutex> lock(mu);
          if (first_error.empty()) first_error = error;
        }
        if (interval > 0) next += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(interval));
      }
      std::lock_guard<std::mutex> lock(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : pool) t.join();
  LoadResult r;
  r.name = name;
  r.threads = threads;
  r.ok = ok;
  r.failed = failed;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.rate = static_cast<double>(r.ok) / r.seconds;
  r.p50_ms = Percentile(latencies, 0.50);
  r.p99_ms = Percentile(latencies, 0.99);
  r.max_ms = latencies.empty() ? 0 : latencies.back();
  if (!first_error.empty()) std::fprintf(stderr, "%s: first error: %s\n", name.c_str(), first_error.c_str());
  return r;
}

/// A phase's figures as a JSON object: `threads_key` (when given) first, then ok, failed,
/// the rate under `rate_key`, and the latencies.
inline Json LoadJson(const LoadResult& r, const std::string& rate_key, const char* threads_key = nullptr) {
  Json j;
  if (threads_key != nullptr) j.Int(threads_key, r.threads);
  j.Int("ok", r.ok).Int("failed", r.failed).Num(rate_key, r.rate).Num("p50_ms", r.p50_ms).Num("p99_ms", r.p99_ms)
      .Num("max_ms", r.max_ms);
  return j;
}

/// A phase's table row: name, threads (when asked), ok, failed, rate, latencies.
inline std::vector<std::string> LoadRow(const LoadResult& r, bool with_threads) {
  std::vector<std::string> row = {r.name};
  if (with_threads) row.push_back(std::to_string(r.threads));
  for (const std::string& cell : {std::to_string(r.ok), std::to_string(r.failed), Fmt(r.rate, 1), Fmt(r.p50_ms),
                                  Fmt(r.p99_ms), Fmt(r.max_ms)}) {
    row.push_back(cell);
  }
  return row;
}

}  // namespace surplus::bench
