#pragma once
// Draft invoices from stored usage, through the pure billing library.

#include <string>

#include "absl/status/statusor.h"
#include "src/store/usage_store.h"
#include "surplus/v1/finance.pb.h"

namespace surplus::api {

/// The invoice of `tenant_id` for `period` ("YYYY-MM"): the finalized one when it exists,
/// else a draft computed now from usage records and job price histories.
absl::StatusOr<surplus::v1::Invoice> LoadInvoice(store::PgUsageStore& usage, const std::string& tenant_id,
                                                 const std::string& period);

/// Draft computed from usage, ignoring any finalized copy.
absl::StatusOr<surplus::v1::Invoice> ComputeDraftInvoice(store::PgUsageStore& usage,
                                                         const std::string& tenant_id,
                                                         const std::string& period);

}  // namespace surplus::api
