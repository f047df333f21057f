#pragma once
// How API objects look in the CLI: tables and detail views of jobs, nodes, capacity,
// tenants, usage and invoices, event lines, and protobuf JSON for scripts.

#include <string>
#include <vector>

#include "google/protobuf/message.h"
#include "src/cli/render.h"
#include "surplus/v1/common.pb.h"
#include "surplus/v1/finance.pb.h"
#include "surplus/v1/operator.pb.h"

namespace surplus::cli {

/// "spot" / "on-demand".
std::string TierName(v1::Tier tier);
/// "PENDING", "RUNNING", ...
std::string StateName(v1::JobState state);
/// "tenant", "operator", ...
std::string RoleName(v1::Role role);
/// "1g.10gb", "2 GPUs", "2x8 GPUs".
std::string ShapeText(const v1::Shape& shape);
/// SUCCEEDED, FAILED, CANCELLED, PREEMPTED, LOST.
bool IsTerminal(v1::JobState state);

/// The message as one line of protobuf JSON (lowerCamelCase names, int64 as strings,
/// fields at their default values included so scripts always find them).
std::string ToJson(const google::protobuf::Message& message);

Table JobsTable(const std::vector<const v1::Job*>& jobs);
Details JobDetails(const v1::Job& job);
/// "2025-03-01T12:00:00Z  j-1  RUNNING  placed on node-a" (no newline).
std::string EventLine(const v1::JobEvent& event);

Table NodesTable(const v1::ListNodesResponse& nodes);
/// One row per GPU of every node.
Table GpusTable(const v1::ListNodesResponse& nodes);
Table CapacityTable(const v1::GetCapacityResponse& capacity);
Table TenantsTable(const v1::ListTenantsResponse& tenants);
Details TenantDetails(const v1::Tenant& tenant);

/// `for_csv` gives exact machine-readable columns (gpu_ms, dollars without '$').
Table UsageTable(const v1::GetUsageResponse& usage, bool for_csv);
Table InvoiceLinesTable(const v1::Invoice& invoice, bool for_csv);
Details InvoiceSummary(const v1::Invoice& invoice);
Table InvoicesTable(const v1::ListInvoicesResponse& invoices, bool for_csv);

}  // namespace surplus::cli
