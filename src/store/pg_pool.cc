#include "src/store/pg_pool.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace surplus::store {

struct PgPool::Slot {
  std::unique_ptr<pqxx::connection> conn;
};

namespace {
constexpr std::chrono::milliseconds kMinBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{2000};
constexpr int kMaxAttempts = 3;

bool IsRetryable(const pqxx::sql_error& e) {
  const std::string& state = e.sqlstate();
  return state == "40001" || state == "40P01";  // serialization_failure, deadlock_detected
}
}  // namespace

absl::Status StatusFromException(const std::exception& e) {
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) {
    return absl::UnavailableError("database unavailable");
  }
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    const std::string& state = sql->sqlstate();
    if (state == "23505") return absl::AlreadyExistsError("already exists");
    if (state == "23503") return absl::FailedPreconditionError("refers to something that does not exist");
    if (state == "23514") return absl::FailedPreconditionError("rejected by a database constraint");
    if (state == "40001" || state == "40P01") return absl::AbortedError("conflicting update, retry");
    if (state.rfind("08", 0) == 0 || state == "57P01" || state == "57P02" || state == "57P03") {
      return absl::UnavailableError("database unavailable");
    }
    spdlog::error("sql error {}: {}", state, sql->what());
    return absl::InternalError("internal database error");
  }
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr) {
    return absl::UnavailableError("database connection lost during commit; outcome unknown");
  }
  spdlog::error("database error: {}", e.what());
  return absl::InternalError("internal database error");
}

PgPool::PgPool(std::string url, int size) : url_(std::move(url)) {
  // Fail fast when the server is unreachable rather than hanging a request.
  setenv("PGCONNECT_TIMEOUT", "3", /*overwrite=*/0);
  for (int i = 0; i < std::max(1, size); ++i) {
    slots_.push_back(std::make_unique<Slot>());
    free_.push_back(slots_.back().get());
  }
}

PgPool::~PgPool() = default;

void PgPool::AddPrepared(std::string name, std::string sql) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& slot : slots_) {
    if (slot->conn && slot->conn->is_open()) slot->conn->prepare(name, sql);
  }
  prepared_.emplace_back(std::move(name), std::move(sql));
}

bool PgPool::Down() const {
  std::lock_guard<std::mutex> lock(mu_);
  return down_;
}

absl::StatusOr<PgPool::Slot*> PgPool::Acquire() {
  Slot* slot = nullptr;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(5), [&] { return !free_.empty(); })) {
      return absl::UnavailableError("database busy: no free connection");
    }
    slot = free_.back();
    free_.pop_back();
    if (slot->conn && slot->conn->is_open()) return slot;
    if (std::chrono::steady_clock::now() < retry_after_) {
      free_.push_back(slot);
      cv_.notify_one();
      return absl::UnavailableError("database unavailable (reconnecting)");
    }
  }
  try {
    auto conn = std::make_unique<pqxx::connection>(url_);
    // Short OLTP statements: JIT compilation (on by default when the planner's estimate is
    // large) costs seconds and saves nothing here.
    pqxx::nontransaction(*conn).exec("SET jit = off");
    for (const auto& [name, sql] : prepared_) conn->prepare(name, sql);
    slot->conn = std::move(conn);
    std::lock_guard<std::mutex> lock(mu_);
    if (down_) spdlog::info("database connection restored");
    down_ = false;
    backoff_ = std::chrono::milliseconds(0);
    return slot;
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mu_);
    slot->conn.reset();
    backoff_ = std::min(kMaxBackoff, std::max(kMinBackoff, backoff_ * 2));
    retry_after_ = std::chrono::steady_clock::now() + backoff_;
    if (!down_) spdlog::warn("database unreachable: {}", e.what());
    down_ = true;
    free_.push_back(slot);
    cv_.notify_one();
    return absl::UnavailableError("database unavailable");
  }
}

void PgPool::Release(Slot* slot, bool broken) {
  std::lock_guard<std::mutex> lock(mu_);
  if (broken) {
    slot->conn.reset();
    down_ = true;
  }
  free_.push_back(slot);
  cv_.notify_one();
}

absl::Status PgPool::MapException(Slot* slot, const std::exception& e, bool* retry) {
  *retry = false;
  bool broken = dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr ||
                dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr ||
                !(slot->conn && slot->conn->is_open());
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    *retry = IsRetryable(*sql);
    const std::string& state = sql->sqlstate();
    if (state.rfind("08", 0) == 0 || state == "57P01") broken = true;
  }
  Release(slot, broken);
  return StatusFromException(e);
}

absl::Status PgPool::Transact(const std::function<void(pqxx::work&)>& fn) {
  absl::Status last;
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    auto slot = Acquire();
    if (!slot.ok()) return slot.status();
    try {
      pqxx::work tx(*(*slot)->conn);
      fn(tx);
      tx.commit();
      Release(*slot, false);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      bool retry = false;
      last = MapException(*slot, e, &retry);
      if (!retry) return last;
    }
  }
  return last;
}

absl::Status PgPool::WithConnection(const std::function<void(pqxx::connection&)>& fn) {
  auto slot = Acquire();
  if (!slot.ok()) return slot.status();
  try {
    fn(*(*slot)->conn);
    Release(*slot, false);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    bool retry = false;
    return MapException(*slot, e, &retry);
  }
}

std::string PgArray(const std::vector<std::string>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out.push_back(',');
    out.push_back('"');
    for (char c : items[i]) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

}  // namespace surplus::store
