#include "scheduler/scheduler.h"

#include "scheduler/incremental.h"

namespace surplus::scheduler {

Decisions Schedule(const Snapshot& snapshot) {
  IncrementalScheduler engine(snapshot);
  RoundOptions options;
  options.full_report = true;
  return engine.Round(snapshot.now_ms, options);
}

}  // namespace surplus::scheduler
