#include "billing/rating.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace surplus::billing {

std::vector<TimeSlice> SplitByTime(int64_t start_ms, int64_t end_ms, int64_t gpu_ms,
                                   std::vector<int64_t> cuts) {
  if (start_ms == end_ms) return {TimeSlice{start_ms, end_ms, gpu_ms}};
  cuts.erase(std::remove_if(cuts.begin(), cuts.end(),
                            [&](int64_t c) { return c <= start_ms || c >= end_ms; }),
             cuts.end());
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  cuts.push_back(end_ms);

  // Durations and products fit in Int128 for any int64 inputs.
  const Int128 total_ms = static_cast<Int128>(end_ms) - start_ms;
  std::vector<TimeSlice> out;
  out.reserve(cuts.size());
  int64_t from = start_ms;
  int64_t given = 0;  // floor(G * (from - start) / D)
  for (int64_t to : cuts) {
    const int64_t upto = static_cast<int64_t>(
        static_cast<Int128>(gpu_ms) * (static_cast<Int128>(to) - start_ms) / total_ms);
    out.push_back(TimeSlice{from, to, upto - given});
    given = upto;
    from = to;
  }
  return out;
}

absl::StatusOr<RatedUsage> RateInterval(int64_t start_ms, int64_t end_ms, int64_t gpu_ms,
                                        const PriceHistory& history,
                                        absl::Span<const int64_t> extra_cuts) {
  if (end_ms < start_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("interval end ", end_ms, " is before start ", start_ms));
  }
  if (gpu_ms < 0) return absl::InvalidArgumentError("negative gpu_ms");
  if (absl::Status s = ValidatePriceHistory(history); !s.ok()) return s;

  std::vector<int64_t> cuts(extra_cuts.begin(), extra_cuts.end());
  for (const PricePoint& p : history) {
    if (p.effective_from_ms > start_ms && p.effective_from_ms < end_ms) {
      cuts.push_back(p.effective_from_ms);
    }
  }
  RatedUsage out;
  for (const TimeSlice& t : SplitByTime(start_ms, end_ms, gpu_ms, std::move(cuts))) {
    const Micros price = PriceAt(history, t.start_ms);
    out.slices.push_back(RatedSlice{t.start_ms, t.end_ms, t.gpu_ms, price});
    out.cost_numerator += CostNumerator(t.gpu_ms, price);
  }
  return out;
}

}  // namespace surplus::billing
