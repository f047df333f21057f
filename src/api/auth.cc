#include "src/api/auth.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "src/common/crypto.h"

namespace surplus::api {

Authenticator::Authenticator(store::PgAuthStore& store, std::chrono::milliseconds ttl)
    : store_(store), ttl_(ttl) {}

absl::StatusOr<store::Principal> Authenticator::Authorize(const grpc::ServerContextBase& ctx,
                                                          std::initializer_list<surplus::v1::Role> roles) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError("missing api key: send 'authorization: Bearer <key>'");
  }
  std::string value(it->second.data(), it->second.size());
  constexpr absl::string_view kPrefix = "Bearer ";
  if (!absl::StartsWithIgnoreCase(value, kPrefix) || value.size() == kPrefix.size()) {
    return absl::UnauthenticatedError("malformed authorization header: expected 'Bearer <key>'");
  }
  const std::string secret = value.substr(kPrefix.size());
  const std::string hash = Sha256Hex(secret);
  const auto now = std::chrono::steady_clock::now();
  store::Principal principal;
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto c = cache_.find(hash);
    if (c != cache_.end() && now - c->second.fetched < ttl_) {
      principal = c->second.principal;
      cached = true;
    }
  }
  if (!cached) {
    auto p = store_.Lookup(secret);
    if (!p.ok()) {
      if (absl::IsNotFound(p.status())) return absl::UnauthenticatedError("unknown or revoked api key");
      return p.status();
    }
    principal = *p;
    std::lock_guard<std::mutex> lock(mu_);
    if (cache_.size() > 100'000) cache_.clear();
    cache_[hash] = Entry{principal, now};
  }
  if (std::find(roles.begin(), roles.end(), principal.role) == roles.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("role '", store::RoleName(principal.role), "' may not call this method"));
  }
  return principal;
}

void Authenticator::Forget(const std::string& key_id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = cache_.begin(); it != cache_.end();) {
    it = it->second.principal.key_id == key_id ? cache_.erase(it) : std::next(it);
  }
}

}  // namespace surplus::api
