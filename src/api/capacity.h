#pragma once
// Capacity per GPU model (owner-busy / sold / idle), shared by OperatorService.GetCapacity
// and the HTTP dashboard.

#include <vector>

#include "absl/status/statusor.h"
#include "src/api/context.h"
#include "surplus/v1/operator.pb.h"

namespace surplus::api {

struct CapacityView {
  surplus::v1::GetCapacityResponse capacity;  ///< one pool per GPU model
  std::vector<surplus::v1::Node> nodes;       ///< with per-GPU use
};

absl::StatusOr<CapacityView> LoadCapacity(const ApiContext& ctx, int64_t now_ms);

/// Adds what the node offers of its host and what its running jobs hold there to the
/// pool's host figures (PoolCapacity fields 11-14).
void AddNodeHost(const surplus::v1::Node& node, surplus::v1::PoolCapacity* pool);

}  // namespace surplus::api
