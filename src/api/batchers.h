#pragma once
// Group commit for submits and for worker telemetry.

#include <vector>

#include "absl/status/status.h"
#include "src/api/group_commit.h"
#include "src/store/job_store.h"
#include "src/store/node_store.h"

namespace surplus::api {

/// Concurrent submits share one durable commit (WAL flush).
class SubmitBatcher : public GroupCommit<store::SubmitItem, store::SubmitOutcome> {
 public:
  SubmitBatcher(store::PgJobStore& store, int writers, size_t max_batch)
      : GroupCommit([&store](const std::vector<store::SubmitItem>& items) { return store.SubmitBatch(items); },
                    writers, max_batch) {}
  void Submit(store::SubmitItem item, Done done) { Add(std::move(item), std::move(done)); }
};

/// Telemetry from every node every interval: reports that arrive together are written in
/// one transaction (see PgNodeStore::RecordTelemetryBatch). When a batch fails, its reports
/// are written one by one, so one node's bad report cannot keep the others from being
/// recorded (and the nodes from being marked lost).
class TelemetryBatcher : public GroupCommit<store::TelemetryReport, absl::Status> {
 public:
  TelemetryBatcher(store::PgNodeStore& store, size_t max_batch)
      : GroupCommit(
            [&store](const std::vector<store::TelemetryReport>& items) {
              std::vector<absl::Status> out(items.size(), store.RecordTelemetryBatch(items));
              if (!out[0].ok() && items.size() > 1) {
                for (size_t i = 0; i < items.size(); ++i) out[i] = store.RecordTelemetryBatch({items[i]});
              }
              return out;
            },
            1, max_batch) {}
};

}  // namespace surplus::api
