#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "scheduler/quote.h"
#include "src/api/services.h"
#include "src/api/write_queue.h"

namespace surplus::api {
namespace v1 = surplus::v1;

namespace {
constexpr std::initializer_list<v1::Role> kJobRoles = {v1::ROLE_TENANT, v1::ROLE_OPERATOR};
// How stale the fleet a quote is computed on may be.
constexpr int64_t kQuoteMaxAgeMs = 250;

// Tenants see only their own jobs; operators see all.
std::string TenantScope(const store::Principal& p) {
  return p.role == v1::ROLE_TENANT ? p.tenant_id : std::string();
}
}  // namespace

grpc::ServerUnaryReactor* TenantServiceImpl::SubmitJob(grpc::CallbackServerContext* c,
                                                       const v1::SubmitJobRequest* req,
                                                       v1::SubmitJobResponse* resp) {
  grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
  ctx_.executor->Submit([this, c, req, resp, reactor] {
    auto principal = ctx_.auth->Authorize(*c, {v1::ROLE_TENANT});
    if (!principal.ok()) return reactor->Finish(ToGrpc(principal.status()));
    if (absl::Status s = ValidateJobSpec(req->spec(), ctx_.config.limits); !s.ok()) {
      return reactor->Finish(ToGrpc(s));
    }
    store::SubmitItem item{principal->tenant_id, req->spec(), NowMs()};
    ctx_.batcher->Submit(std::move(item), [resp, reactor](const store::SubmitOutcome& o) {
      if (!o.status.ok()) return reactor->Finish(ToGrpc(o.status));
      *resp->mutable_job() = o.job;
      resp->set_created(o.created);
      reactor->Finish(grpc::Status::OK);
    });
  });
  return reactor;
}

grpc::ServerUnaryReactor* TenantServiceImpl::GetJob(grpc::CallbackServerContext* c, const v1::GetJobRequest* req,
                                                    v1::Job* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kJobRoles);
    if (!p.ok()) return p.status();
    if (absl::Status s = ValidateJobId(req->job_id()); !s.ok()) return s;
    auto job = ctx_.jobs->GetJob(req->job_id(), TenantScope(*p));
    if (!job.ok()) return job.status();
    *resp = std::move(*job);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TenantServiceImpl::ListJobs(grpc::CallbackServerContext* c,
                                                      const v1::ListJobsRequest* req, v1::ListJobsResponse* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kJobRoles);
    if (!p.ok()) return p.status();
    if (req->page_size() < 0 || req->page_size() > 500) {
      return absl::InvalidArgumentError("page_size: must be 0 (default 50) to 500");
    }
    std::vector<v1::JobState> states;
    for (int s : req->states()) {
      if (!v1::JobState_IsValid(s) || s == v1::JOB_STATE_UNSPECIFIED) {
        return absl::InvalidArgumentError(absl::StrCat("states: unknown job state ", s));
      }
      states.push_back(static_cast<v1::JobState>(s));
    }
    std::string tenant = TenantScope(*p);
    if (p->role == v1::ROLE_TENANT && !req->tenant_id().empty() && req->tenant_id() != p->tenant_id) {
      return absl::PermissionDeniedError("tenant_id: tenants may list only their own jobs");
    }
    if (p->role == v1::ROLE_OPERATOR) tenant = req->tenant_id();
    auto page = ctx_.jobs->ListJobs(tenant, states, req->page_size() == 0 ? 50 : req->page_size(),
                                    req->page_token());
    if (!page.ok()) return page.status();
    for (auto& j : page->jobs) *resp->add_jobs() = std::move(j);
    resp->set_next_page_token(page->next_page_token);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TenantServiceImpl::CancelJob(grpc::CallbackServerContext* c,
                                                       const v1::CancelJobRequest* req, v1::Job* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kJobRoles);
    if (!p.ok()) return p.status();
    if (absl::Status s = ValidateJobId(req->job_id()); !s.ok()) return s;
    auto job = ctx_.jobs->CancelJob(req->job_id(), TenantScope(*p), NowMs(), ctx_.config.preemption_notice_ms);
    if (!job.ok()) return job.status();
    for (const auto& pl : job->placements()) ctx_.workers->Nudge(pl.node());
    *resp = std::move(*job);
    return absl::OkStatus();
  });
}

namespace {

// Streams a job's state, then each change, and finishes when the job ends.
class JobWatchReactor final : public grpc::ServerWriteReactor<v1::JobEvent>, public WatchHub::Watcher {
 public:
  JobWatchReactor(ApiContext& ctx, grpc::CallbackServerContext* c, std::string job_id)
      : ctx_(ctx), job_id_(std::move(job_id)) {
    ctx_.executor->Submit([this, c] { Start(*c); });
  }

  void OnChange(const v1::Job& job) override { Enqueue(job); }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    out_.WriteDone();
    if (!ok) return FinishLocked(grpc::Status::CANCELLED);
    WriteNextLocked();
  }
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    FinishLocked(grpc::Status::CANCELLED);
  }
  void OnDone() override {
    ctx_.watch->Remove(this);
    Unref();
  }

 private:
  // Two references: the gRPC side (dropped in OnDone) and the start task.
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  void Start(const grpc::CallbackServerContext& c) {
    auto p = ctx_.auth->Authorize(c, {v1::ROLE_TENANT, v1::ROLE_OPERATOR});
    absl::StatusOr<v1::Job> job = absl::UnknownError("");
    if (!p.ok()) {
      job = p.status();
    } else if (absl::Status s = ValidateJobId(job_id_); !s.ok()) {
      job = s;
    } else {
      job = ctx_.jobs->GetJob(job_id_, TenantScope(*p));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!job.ok()) FinishLocked(ToGrpc(job.status()));
      if (finished_) return Unref();
    }
    ctx_.watch->Add(job_id_, this,
                    store::JobVersion{store::StateName(job->state()), job->reason(), job->attempt()});
    Enqueue(*job);
    bool finished = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      finished = finished_;
    }
    // OnDone may have run before Add: make sure the hub does not keep this watcher.
    if (finished) ctx_.watch->Remove(this);
    Unref();
  }

  void Enqueue(const v1::Job& job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || ended_) return;
    v1::JobEvent ev;
    ev.set_job_id(job.id());
    ev.set_state(job.state());
    ev.set_reason(job.reason());
    SetTimestampMs(NowMs(), ev.mutable_at());
    *ev.mutable_job() = job;
    ended_ = store::IsTerminal(job.state());
    out_.Push(std::move(ev));
    WriteNextLocked();
  }

  void WriteNextLocked() {
    if (finished_) return;
    if (const v1::JobEvent* next = out_.Next()) {
      StartWrite(next);
    } else if (ended_ && out_.Idle()) {
      FinishLocked(grpc::Status::OK);
    }
  }

  void FinishLocked(const grpc::Status& s) {
    if (finished_) return;
    finished_ = true;
    Finish(s);
  }

  ApiContext& ctx_;
  const std::string job_id_;
  std::mutex mu_;
  WriteQueue<v1::JobEvent> out_;
  bool finished_ = false;
  bool ended_ = false;
  std::atomic<int> refs_{2};
};

}  // namespace

grpc::ServerWriteReactor<v1::JobEvent>* TenantServiceImpl::WatchJob(grpc::CallbackServerContext* c,
                                                                    const v1::WatchJobRequest* req) {
  return new JobWatchReactor(ctx_, c, req->job_id());
}

grpc::ServerUnaryReactor* TenantServiceImpl::GetQuote(grpc::CallbackServerContext* c,
                                                      const v1::GetQuoteRequest* req, v1::GetQuoteResponse* resp) {
  Executor& executor = ctx_.quote_executor != nullptr ? *ctx_.quote_executor : *ctx_.executor;
  return DeferOrRefuse(c, executor, "too many quotes at once; retry in a moment",
                       [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kJobRoles);
    if (!p.ok()) return p.status();
    if (absl::Status s = ValidateShape(req->shape(), req->gpu_model(), ctx_.config.limits, "shape"); !s.ok()) {
      return s;
    }
    if (absl::Status s = ValidateTerms(req->tier(), req->bid_micros_per_gpu_hour(),
                                       req->max_runtime_seconds(), ctx_.config.limits, "");
        !s.ok()) {
      return s;
    }
    std::unique_lock<std::timed_mutex> lock(quote_mu_, std::defer_lock);
    if (!lock.try_lock_for(std::chrono::seconds(2))) {
      return absl::ResourceExhaustedError("too many quotes at once; retry in a moment");
    }
    const int64_t now = NowMs();
    if (!quote_mirror_) quote_mirror_ = std::make_unique<FleetMirror>(ctx_);
    if (!quote_mirror_->loaded() || now - quote_synced_ms_ > kQuoteMaxAgeMs) {
      auto refreshed = quote_mirror_->Refresh(now);
      if (!refreshed.ok()) return refreshed.status();
      quote_synced_ms_ = now;
      quote_baseline_ = scheduler::BaselineOf(quote_mirror_->engine(), now);
    }
    scheduler::JobView cand;
    cand.tenant_id = p->tenant_id;
    cand.tier = req->tier() == v1::TIER_ON_DEMAND ? Tier::kOnDemand : Tier::kSpot;
    cand.bid = req->bid_micros_per_gpu_hour();
    const auto& sh = req->shape();
    if (sh.has_whole_gpus()) cand.shape = JobShape::WholeGpus(sh.whole_gpus().count());
    else if (sh.has_gang()) cand.shape = JobShape::Gang(sh.gang().nodes(), sh.gang().gpus_per_node());
    else cand.shape = JobShape::Slice(sh.slice_profile());
    cand.shape.cpu_millis = sh.cpu_millis();
    cand.shape.memory_mib = sh.memory_mib();
    cand.gpu_model = req->gpu_model();
    cand.max_runtime_ms = req->max_runtime_seconds() * 1000;
    const scheduler::Quote q =
        scheduler::QuoteJob(quote_mirror_->engine(), quote_synced_ms_, cand, quote_baseline_);
    resp->set_would_start_now(q.would_start_now);
    resp->set_reason(q.would_start_now ? "" : q.reason.empty() ? "would not start now" : q.reason);
    resp->set_price_micros_per_gpu_hour(q.would_start_now ? q.price : 0);
    resp->set_would_preempt_jobs(q.would_preempt);
    std::string model = q.would_start_now ? q.gpu_model : req->gpu_model();
    for (const auto& pp : q.prices) {
      if (model.empty() || pp.gpu_model == model) {
        resp->set_clearing_price_micros_per_gpu_hour(pp.clearing_price);
        model = pp.gpu_model;
        break;
      }
    }
    for (const auto& pp : q.current_prices) {
      if (pp.gpu_model == model) resp->set_current_clearing_price_micros_per_gpu_hour(pp.clearing_price);
    }
    resp->set_gpu_model(model);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TenantServiceImpl::GetJobLog(grpc::CallbackServerContext* c,
                                                       const v1::GetJobLogRequest* req, v1::GetJobLogResponse* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, kJobRoles);
    if (!p.ok()) return p.status();
    if (absl::Status s = ValidateJobId(req->job_id()); !s.ok()) return s;
    if (req->offset() < 0) return absl::InvalidArgumentError("offset: must not be negative");
    if (req->max_bytes() < 0 || req->max_bytes() > (1 << 20)) {
      return absl::InvalidArgumentError("max_bytes: must be 0 (default 64 KiB) to 1 MiB");
    }
    auto job = ctx_.jobs->GetJob(req->job_id(), TenantScope(*p));
    if (!job.ok()) return job.status();
    if (req->attempt() < 0) return absl::InvalidArgumentError("attempt: must be 0 (the latest) or more");
    if (req->attempt() > job->attempt()) {
      return absl::NotFoundError(absl::StrCat("job ", req->job_id(), " has no attempt ", req->attempt(),
                                              " (latest: ", job->attempt(), ")"));
    }
    const int max = req->max_bytes() == 0 ? 64 * 1024 : req->max_bytes();
    auto log = ctx_.jobs->ReadLog(req->job_id(), req->attempt(), req->offset(), max);
    if (!log.ok()) return log.status();
    resp->set_data(std::move(log->data));
    resp->set_next_offset(log->next_offset);
    resp->set_eof(log->eof);
    resp->set_attempt(log->attempt);
    resp->set_latest_attempt(log->latest_attempt);
    return absl::OkStatus();
  });
}

WatchHub::WatchHub(ApiContext& ctx, std::chrono::milliseconds interval)
    : ctx_(ctx), interval_(interval), thread_([this] { Loop(); }) {}

WatchHub::~WatchHub() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void WatchHub::Add(const std::string& job_id, Watcher* w, const store::JobVersion& seen) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_[w] = Entry{job_id, seen};
}

void WatchHub::Remove(Watcher* w) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.erase(w);
}

void WatchHub::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, interval_, [&] { return stopping_; });
    if (stopping_ || watchers_.empty()) continue;
    std::vector<std::string> ids;
    for (const auto& [w, e] : watchers_) ids.push_back(e.job_id);
    lock.unlock();
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    auto versions = ctx_.jobs->Versions(ids);
    std::map<std::string, v1::Job> changed;
    lock.lock();
    if (!versions.ok()) continue;
    std::vector<std::string> to_fetch;
    for (const auto& [w, e] : watchers_) {
      auto it = versions->find(e.job_id);
      if (it != versions->end() && it->second != e.seen) to_fetch.push_back(e.job_id);
    }
    if (to_fetch.empty()) continue;
    lock.unlock();
    for (const auto& id : to_fetch) {
      auto job = ctx_.jobs->GetJob(id, "");
      if (job.ok()) changed[id] = std::move(*job);
    }
    lock.lock();
    for (auto& [w, e] : watchers_) {
      auto it = changed.find(e.job_id);
      if (it == changed.end()) continue;
      store::JobVersion v{store::StateName(it->second.state()), it->second.reason(), it->second.attempt()};
      if (v == e.seen) continue;
      e.seen = v;
      w->OnChange(it->second);
    }
  }
}

}  // namespace surplus::api
