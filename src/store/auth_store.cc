#include "src/store/auth_store.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "src/common/crypto.h"

namespace surplus::store {
namespace {

constexpr char kTenantColumns[] = "id, display_name, max_gpus, max_pending_jobs, created_ms";

void FillTenant(const pqxx::row& r, surplus::v1::Tenant* t) {
  t->set_id(r[0].as<std::string>());
  t->set_display_name(r[1].as<std::string>());
  t->set_max_gpus(r[2].as<int>());
  t->set_max_pending_jobs(r[3].as<int>());
  int64_t ms = r[4].as<int64_t>();
  t->mutable_created_at()->set_seconds(ms / 1000);
  t->mutable_created_at()->set_nanos(static_cast<int32_t>(ms % 1000) * 1'000'000);
}

constexpr int64_t kBootstrapLockKey = 0x5375727032;

}  // namespace

std::string RoleName(surplus::v1::Role role) {
  switch (role) {
    case surplus::v1::ROLE_TENANT: return "tenant";
    case surplus::v1::ROLE_OPERATOR: return "operator";
    case surplus::v1::ROLE_FINANCE: return "finance";
    case surplus::v1::ROLE_WORKER: return "worker";
    default: return "";
  }
}

surplus::v1::Role RoleFromName(const std::string& name) {
  if (name == "tenant") return surplus::v1::ROLE_TENANT;
  if (name == "operator") return surplus::v1::ROLE_OPERATOR;
  if (name == "finance") return surplus::v1::ROLE_FINANCE;
  if (name == "worker") return surplus::v1::ROLE_WORKER;
  return surplus::v1::ROLE_UNSPECIFIED;
}

absl::StatusOr<surplus::v1::Tenant> PgAuthStore::CreateTenant(
    const surplus::v1::CreateTenantRequest& req, int64_t now_ms) {
  surplus::v1::Tenant out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    auto r = tx.exec_params(
        absl::StrCat("INSERT INTO tenants (id, display_name, max_gpus, max_pending_jobs, created_ms)"
                     " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING RETURNING ",
                     kTenantColumns),
        req.id(), req.display_name(), req.max_gpus(), req.max_pending_jobs(), now_ms);
    if (r.empty()) return;
    FillTenant(r[0], &out);
  });
  if (!st.ok()) return st;
  if (out.id().empty()) return absl::AlreadyExistsError(absl::StrCat("tenant '", req.id(), "' already exists"));
  return out;
}

absl::StatusOr<std::vector<surplus::v1::Tenant>> PgAuthStore::ListTenants() {
  std::vector<surplus::v1::Tenant> out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    out.clear();
    for (const auto& r : tx.exec(absl::StrCat("SELECT ", kTenantColumns, " FROM tenants ORDER BY id"))) {
      FillTenant(r, &out.emplace_back());
    }
  });
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<surplus::v1::Tenant> PgAuthStore::GetTenant(const std::string& id) {
  surplus::v1::Tenant out;
  bool found = false;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    auto r = tx.exec_params(absl::StrCat("SELECT ", kTenantColumns, " FROM tenants WHERE id = $1"), id);
    found = !r.empty();
    if (found) FillTenant(r[0], &out);
  });
  if (!st.ok()) return st;
  if (!found) return absl::NotFoundError(absl::StrCat("tenant '", id, "' not found"));
  return out;
}

absl::StatusOr<IssuedKey> PgAuthStore::IssueKey(surplus::v1::Role role, const std::string& tenant_id,
                                                const std::string& description, int64_t now_ms) {
  IssuedKey key{absl::StrCat("key-", RandomHex(8)), NewApiKeySecret()};
  bool tenant_ok = true;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    if (role == surplus::v1::ROLE_TENANT) {
      tenant_ok = !tx.exec_params("SELECT 1 FROM tenants WHERE id = $1", tenant_id).empty();
      if (!tenant_ok) return;
    }
    tx.exec_params(
        "INSERT INTO api_keys (id, key_hash, role, tenant_id, description, created_ms)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        key.key_id, Sha256Hex(key.secret), RoleName(role),
        role == surplus::v1::ROLE_TENANT ? std::optional<std::string>(tenant_id) : std::nullopt,
        description, now_ms);
  });
  if (!st.ok()) return st;
  if (!tenant_ok) return absl::FailedPreconditionError(absl::StrCat("tenant '", tenant_id, "' does not exist"));
  return key;
}

absl::StatusOr<bool> PgAuthStore::RevokeKey(const std::string& key_id, int64_t now_ms) {
  bool exists = false;
  bool revoked = false;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    exists = !tx.exec_params("SELECT 1 FROM api_keys WHERE id = $1", key_id).empty();
    auto r = tx.exec_params(
        "UPDATE api_keys SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL RETURNING id",
        key_id, now_ms);
    revoked = !r.empty();
  });
  if (!st.ok()) return st;
  if (!exists) return absl::NotFoundError(absl::StrCat("api key '", key_id, "' not found"));
  return revoked;
}

absl::StatusOr<Principal> PgAuthStore::Lookup(const std::string& secret) {
  Principal p;
  bool found = false;
  const std::string hash = Sha256Hex(secret);
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    auto r = tx.exec_params(
        "SELECT id, role, coalesce(tenant_id, '') FROM api_keys"
        " WHERE key_hash = $1 AND revoked_ms IS NULL",
        hash);
    found = !r.empty();
    if (!found) return;
    p.key_id = r[0][0].as<std::string>();
    p.role = RoleFromName(r[0][1].as<std::string>());
    p.tenant_id = r[0][2].as<std::string>();
  });
  if (!st.ok()) return st;
  if (!found) return absl::NotFoundError("unknown or revoked api key");
  return p;
}

absl::StatusOr<IssuedKey> PgAuthStore::BootstrapOperatorKey(int64_t now_ms) {
  IssuedKey key;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    key = IssuedKey{};
    tx.exec_params("SELECT pg_advisory_xact_lock($1)", kBootstrapLockKey);
    auto r = tx.exec("SELECT 1 FROM api_keys WHERE role = 'operator' AND revoked_ms IS NULL LIMIT 1");
    if (!r.empty()) return;
    key = IssuedKey{absl::StrCat("key-", RandomHex(8)), NewApiKeySecret()};
    tx.exec_params(
        "INSERT INTO api_keys (id, key_hash, role, description, created_ms)"
        " VALUES ($1, $2, 'operator', 'bootstrap operator key', $3)",
        key.key_id, Sha256Hex(key.secret), now_ms);
  });
  if (!st.ok()) return st;
  return key;
}

}  // namespace surplus::store
