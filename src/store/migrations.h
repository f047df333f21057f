#pragma once
// Numbered schema migrations, embedded from migrations/*.sql at build time.

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace surplus::store {

class PgPool;

struct Migration {
  int version;
  const char* name;
  const char* sql;
};

const std::vector<Migration>& EmbeddedMigrations();

/// Applies every migration not yet recorded in `schema_migrations`, each in its own
/// transaction, under a transaction-level advisory lock so that concurrent runs apply
/// each exactly once. Returns the number applied (0 when up to date).
absl::StatusOr<int> Migrate(PgPool& pool);

/// Highest applied version, 0 for an empty database.
absl::StatusOr<int> SchemaVersion(PgPool& pool);

}  // namespace surplus::store
