#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "src/api/capacity.h"
#include "src/api/services.h"

namespace surplus::api {
namespace v1 = surplus::v1;

namespace {
constexpr std::initializer_list<v1::Role> kOperator = {v1::ROLE_OPERATOR};
}  // namespace

grpc::ServerUnaryReactor* OperatorServiceImpl::ListNodes(grpc::CallbackServerContext* c,
                                                         const v1::ListNodesRequest*, v1::ListNodesResponse* resp) {
  return Defer(c, *ctx_.executor, [this, c, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kOperator);
    if (!p.ok()) return p.status();
    auto nodes = ctx_.nodes->ListNodes(ctx_.config.harvest, NowMs());
    if (!nodes.ok()) return nodes.status();
    for (auto& n : *nodes) *resp->add_nodes() = std::move(n);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* OperatorServiceImpl::GetCapacity(grpc::CallbackServerContext* c,
                                                           const v1::GetCapacityRequest*,
                                                           v1::GetCapacityResponse* resp) {
  return Defer(c, *ctx_.executor, [this, c, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, {v1::ROLE_OPERATOR, v1::ROLE_FINANCE});
    if (!p.ok()) return p.status();
    auto view = LoadCapacity(ctx_, NowMs());
    if (!view.ok()) return view.status();
    *resp = std::move(view->capacity);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* OperatorServiceImpl::CreateTenant(grpc::CallbackServerContext* c,
                                                            const v1::CreateTenantRequest* req, v1::Tenant* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kOperator);
    if (!p.ok()) return p.status();
    if (absl::Status s = ValidateCreateTenant(*req); !s.ok()) return s;
    auto t = ctx_.auth_store->CreateTenant(*req, NowMs());
    if (!t.ok()) return t.status();
    *resp = std::move(*t);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* OperatorServiceImpl::ListTenants(grpc::CallbackServerContext* c,
                                                           const v1::ListTenantsRequest*,
                                                           v1::ListTenantsResponse* resp) {
  return Defer(c, *ctx_.executor, [this, c, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, {v1::ROLE_OPERATOR, v1::ROLE_FINANCE});
    if (!p.ok()) return p.status();
    auto list = ctx_.auth_store->ListTenants();
    if (!list.ok()) return list.status();
    for (auto& t : *list) *resp->add_tenants() = std::move(t);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* OperatorServiceImpl::IssueApiKey(grpc::CallbackServerContext* c,
                                                           const v1::IssueApiKeyRequest* req,
                                                           v1::IssueApiKeyResponse* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kOperator);
    if (!p.ok()) return p.status();
    if (!v1::Role_IsValid(req->role()) || req->role() == v1::ROLE_UNSPECIFIED) {
      return absl::InvalidArgumentError("role: must be ROLE_TENANT, ROLE_OPERATOR, ROLE_FINANCE or ROLE_WORKER");
    }
    if (req->role() == v1::ROLE_TENANT) {
      if (absl::Status s = ValidateTenantId(req->tenant_id(), "tenant_id"); !s.ok()) return s;
    } else if (!req->tenant_id().empty()) {
      return absl::InvalidArgumentError("tenant_id: only tenant keys belong to a tenant");
    }
    if (req->description().size() > 256) return absl::InvalidArgumentError("description: at most 256 bytes");
    auto key = ctx_.auth_store->IssueKey(req->role(), req->tenant_id(), req->description(), NowMs());
    if (!key.ok()) {
      if (absl::IsFailedPrecondition(key.status())) {
        return absl::NotFoundError(absl::StrCat("tenant_id: tenant '", req->tenant_id(), "' not found"));
      }
      return key.status();
    }
    resp->set_key_id(key->key_id);
    resp->set_api_key(key->secret);
    resp->set_role(req->role());
    resp->set_tenant_id(req->tenant_id());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* OperatorServiceImpl::RevokeApiKey(grpc::CallbackServerContext* c,
                                                            const v1::RevokeApiKeyRequest* req,
                                                            v1::RevokeApiKeyResponse* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kOperator);
    if (!p.ok()) return p.status();
    if (req->key_id().empty() || req->key_id().size() > 64) return absl::InvalidArgumentError("key_id: required");
    auto revoked = ctx_.auth_store->RevokeKey(req->key_id(), NowMs());
    if (!revoked.ok()) return revoked.status();
    ctx_.auth->Forget(req->key_id());
    resp->set_revoked(*revoked);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* OperatorServiceImpl::SetReservePrice(grpc::CallbackServerContext* c,
                                                               const v1::SetReservePriceRequest* req,
                                                               v1::SetReservePriceResponse* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kOperator);
    if (!p.ok()) return p.status();
    const GpuModel* model = FindGpuModel(req->gpu_model());
    if (model == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("gpu_model: unknown GPU model '", req->gpu_model().substr(0, 64), "'"));
    }
    if (req->reserve_micros_per_gpu_hour() < 0 || req->reserve_micros_per_gpu_hour() > ctx_.config.limits.max_bid) {
      return absl::InvalidArgumentError(
          absl::StrCat("reserve_micros_per_gpu_hour: must be 0 to ", ctx_.config.limits.max_bid));
    }
    absl::Status s = ctx_.market->SetReservePrice(model->name, req->reserve_micros_per_gpu_hour(), NowMs());
    if (!s.ok()) return s;
    resp->set_gpu_model(model->name);
    resp->set_reserve_micros_per_gpu_hour(req->reserve_micros_per_gpu_hour());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* OperatorServiceImpl::CordonNode(grpc::CallbackServerContext* c,
                                                          const v1::CordonNodeRequest* req, v1::Node* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kOperator);
    if (!p.ok()) return p.status();
    if (req->node().empty() || req->node().size() > 253) return absl::InvalidArgumentError("node: required");
    auto n = ctx_.nodes->SetCordoned(req->node(), req->cordoned(), req->drain());
    if (!n.ok()) return n.status();
    *resp = std::move(*n);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* OperatorServiceImpl::ReclaimCapacity(grpc::CallbackServerContext* c,
                                                               const v1::ReclaimCapacityRequest* req,
                                                               v1::ReclaimCapacityResponse* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kOperator);
    if (!p.ok()) return p.status();
    if (req->node().empty() || req->node().size() > 253) return absl::InvalidArgumentError("node: required");
    if (req->action() != v1::RECLAIM_ACTION_RECLAIM && req->action() != v1::RECLAIM_ACTION_RELEASE) {
      return absl::InvalidArgumentError(
          "action: RECLAIM_ACTION_RECLAIM (take the GPUs back) or RECLAIM_ACTION_RELEASE (hand them back)");
    }
    const bool reclaim = req->action() == v1::RECLAIM_ACTION_RECLAIM;
    std::vector<int> gpus;
    for (int g : req->gpu_indices()) {
      if (g < 0 || g > 1023) return absl::InvalidArgumentError(absl::StrCat("gpu_indices: bad index ", g));
      if (std::find(gpus.begin(), gpus.end(), g) == gpus.end()) gpus.push_back(g);
    }
    const int64_t now = NowMs();
    if (absl::Status s = ctx_.nodes->SetReclaimed(req->node(), gpus, reclaim, now); !s.ok()) return s;
    if (!reclaim) return absl::OkStatus();
    // Preempt at once rather than waiting for the next round: the owner's need wins.
    auto running = ctx_.jobs->RunningOnNode(req->node());
    if (!running.ok()) return running.status();
    scheduler::Decisions d;
    for (const auto& [job_id, on] : *running) {
      bool hit = gpus.empty();
      for (int g : on) hit = hit || std::find(gpus.begin(), gpus.end(), g) != gpus.end();
      if (!hit) continue;
      d.preemptions.push_back({job_id, scheduler::PreemptCause::kOwnerReclaim,
                               absl::StrCat("the fleet owner reclaimed GPUs of ", req->node())});
      resp->add_preempted_job_ids(job_id);
    }
    if (absl::Status s = ctx_.jobs->ApplyDecisions(d, {}, now, ctx_.config.preemption_notice_ms); !s.ok()) return s;
    ctx_.workers->Nudge(req->node());
    return absl::OkStatus();
  });
}

}  // namespace surplus::api
