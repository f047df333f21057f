#include "scheduler/scheduler.h"

#include "absl/strings/str_cat.h"
#include "scheduler/incremental.h"

namespace surplus::scheduler {

std::string OutbidReason(Micros clearing_price, Micros bid) {
  return absl::StrCat("outbid: clearing price ", FormatUsd(clearing_price), "/GPU-h > your bid ", FormatUsd(bid));
}

Decisions Schedule(const Snapshot& snapshot) {
  IncrementalScheduler engine(snapshot);
  RoundOptions options;
  options.full_report = true;
  return engine.Round(snapshot.now_ms, options);
}

}  // namespace surplus::scheduler
