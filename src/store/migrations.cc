#include "src/store/migrations.h"

#include <spdlog/spdlog.h>

#include "src/common/grpc_util.h"
#include "src/store/pg_pool.h"

namespace surplus::store {
namespace {
// Arbitrary constant naming the migration lock.
constexpr int64_t kMigrationLockKey = 0x5375727031;  // "Surp1"
}  // namespace

absl::StatusOr<int> Migrate(PgPool& pool) {
  int applied = 0;
  for (const Migration& m : EmbeddedMigrations()) {
    bool did = false;
    absl::Status st = pool.Transact([&](pqxx::work& tx) {
      did = false;
      tx.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLockKey);
      tx.exec(
          "CREATE TABLE IF NOT EXISTS schema_migrations ("
          " version integer PRIMARY KEY, name text NOT NULL, applied_ms bigint NOT NULL)");
      auto r = tx.exec_params("SELECT 1 FROM schema_migrations WHERE version = $1", m.version);
      if (!r.empty()) return;
      tx.exec(m.sql);
      tx.exec_params("INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
                     m.version, std::string(m.name), NowMs());
      did = true;
    });
    if (!st.ok()) return st;
    if (did) {
      spdlog::info("applied migration {}", m.name);
      ++applied;
    }
  }
  return applied;
}

absl::StatusOr<int> SchemaVersion(PgPool& pool) {
  int version = 0;
  absl::Status st = pool.Transact([&](pqxx::work& tx) {
    auto r = tx.exec("SELECT to_regclass('schema_migrations') IS NOT NULL");
    if (!r[0][0].as<bool>()) return;
    version = tx.exec("SELECT coalesce(max(version), 0) FROM schema_migrations")[0][0].as<int>();
  });
  if (!st.ok()) return st;
  return version;
}

}  // namespace surplus::store
