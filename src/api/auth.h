#pragma once
// Bearer-key authentication with a short-lived cache, and role checks.

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <initializer_list>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "src/store/auth_store.h"

namespace surplus::api {

class Authenticator {
 public:
  /// Keys are re-checked against the database after `ttl` (revocations made through
  /// another replica take effect within it; through this one, at once).
  Authenticator(store::PgAuthStore& store, std::chrono::milliseconds ttl);

  /// The caller's principal: UNAUTHENTICATED without a valid `authorization: Bearer`
  /// key, PERMISSION_DENIED when its role is not among `roles`.
  absl::StatusOr<store::Principal> Authorize(const grpc::ServerContextBase& ctx,
                                             std::initializer_list<surplus::v1::Role> roles);
  /// Drops a key from the cache (after revocation).
  void Forget(const std::string& key_id);

 private:
  struct Entry {
    store::Principal principal;
    std::chrono::steady_clock::time_point fetched;
  };
  store::PgAuthStore& store_;
  const std::chrono::milliseconds ttl_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> cache_;  // by secret hash
};

}  // namespace surplus::api
