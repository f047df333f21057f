#pragma once
// A small pool of PostgreSQL connections. Exceptions from libpqxx stop here and become
// absl::Status once: broken connection -> UNAVAILABLE (the connection is dropped and
// re-opened later with backoff), unique violation -> ALREADY_EXISTS, serialization
// failure or deadlock -> retried a bounded number of times, then ABORTED.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace surplus::store {

class PgPool {
 public:
  /// `url`: a libpq connection string or URI. `size`: connections kept open at most.
  PgPool(std::string url, int size);
  ~PgPool();
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  /// Runs `fn` in a read-write transaction and commits it. Serialization failures and
  /// deadlocks are retried (up to 3 attempts); `fn` must be safe to run again.
  absl::Status Transact(const std::function<void(pqxx::work&)>& fn);

  /// Runs `fn` on a connection outside any transaction (LISTEN, advisory session locks).
  absl::Status WithConnection(const std::function<void(pqxx::connection&)>& fn);

  /// Registers a statement prepared on every connection (now and after reconnects).
  /// Call before the first use, before concurrent use begins.
  void AddPrepared(std::string name, std::string sql);

  /// True while the last attempt to reach the database failed.
  bool Down() const;

  const std::string& url() const { return url_; }

 private:
  struct Slot;
  // Takes a free slot, connecting it when needed; UNAVAILABLE while backing off.
  absl::StatusOr<Slot*> Acquire();
  void Release(Slot* slot, bool broken);
  absl::Status MapException(Slot* slot, const std::exception& e, bool* retry);

  const std::string url_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> free_;
  std::vector<std::pair<std::string, std::string>> prepared_;
  // Reconnect backoff after a failure to connect.
  std::chrono::steady_clock::time_point retry_after_{};
  std::chrono::milliseconds backoff_{0};
  bool down_ = false;
};

/// A PostgreSQL array literal of `items`, each quoted and escaped: one parameter for a
/// statement that takes many rows through unnest($n::type[]).
std::string PgArray(const std::vector<std::string>& items);

/// Maps a libpqxx/SQL exception to a status (used by code that handles its own
/// transactions).
absl::Status StatusFromException(const std::exception& e);

}  // namespace surplus::store
