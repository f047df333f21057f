#pragma once
// Tenants and API keys. Secrets are never stored: only their SHA-256.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/store/pg_pool.h"
#include "surplus/v1/operator.pb.h"

namespace surplus::store {

struct Principal {
  std::string key_id;
  surplus::v1::Role role = surplus::v1::ROLE_UNSPECIFIED;
  std::string tenant_id;  ///< set for ROLE_TENANT
};

struct IssuedKey {
  std::string key_id;
  std::string secret;  ///< shown once
};

class PgAuthStore {
 public:
  explicit PgAuthStore(PgPool& pool) : pool_(pool) {}

  /// ALREADY_EXISTS when the id is taken.
  absl::StatusOr<surplus::v1::Tenant> CreateTenant(const surplus::v1::CreateTenantRequest& req,
                                                   int64_t now_ms);
  absl::StatusOr<std::vector<surplus::v1::Tenant>> ListTenants();
  /// NOT_FOUND when absent.
  absl::StatusOr<surplus::v1::Tenant> GetTenant(const std::string& id);

  /// Creates a key. FAILED_PRECONDITION when the tenant does not exist.
  absl::StatusOr<IssuedKey> IssueKey(surplus::v1::Role role, const std::string& tenant_id,
                                     const std::string& description, int64_t now_ms);
  /// True when a live key was revoked; NOT_FOUND when no such key.
  absl::StatusOr<bool> RevokeKey(const std::string& key_id, int64_t now_ms);
  /// The principal of a live key; NOT_FOUND for unknown or revoked keys.
  absl::StatusOr<Principal> Lookup(const std::string& secret);

  /// Creates an operator key unless one is live already (serialized across replicas).
  /// Returns the new key, or an empty key_id when one existed.
  absl::StatusOr<IssuedKey> BootstrapOperatorKey(int64_t now_ms);

 private:
  PgPool& pool_;
};

std::string RoleName(surplus::v1::Role role);
surplus::v1::Role RoleFromName(const std::string& name);

}  // namespace surplus::store
