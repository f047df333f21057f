#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <set>

#include "absl/strings/str_cat.h"
#include "src/api/services.h"
#include "src/api/validation.h"
#include "src/api/write_queue.h"
#include "surplus/gpu_models.h"

namespace surplus::api {
namespace v1 = surplus::v1;

grpc::ServerUnaryReactor* WorkerServiceImpl::Register(grpc::CallbackServerContext* c, const v1::RegisterRequest* req,
                                                      v1::RegisterResponse* resp) {
  return Defer(c, *ctx_.executor, [this, c, req, resp]() -> absl::Status {
    auto p = ctx_.auth->Authorize(*c, {v1::ROLE_WORKER});
    if (!p.ok()) return p.status();
    if (absl::Status s = ValidateNodeName(req->node(), "node"); !s.ok()) return s;
    const GpuModel* model = FindGpuModel(req->gpu_model());
    if (model == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("gpu_model: unknown GPU model '", req->gpu_model().substr(0, 64), "'"));
    }
    if (req->gpus_size() == 0 || req->gpus_size() > 64) return absl::InvalidArgumentError("gpus: 1 to 64 GPUs");
    // A node larger than any job may ask for is taken at that size: 0 = unknown.
    if (req->cpu_millis() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("cpu_millis: must not be negative, got ", req->cpu_millis()));
    }
    if (req->memory_mib() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("memory_mib: must not be negative, got ", req->memory_mib()));
    }
    for (int i = 0; i < req->gpus_size(); ++i) {
      const v1::GpuDescription& g = req->gpus(i);
      if (g.index() != i) return absl::InvalidArgumentError("gpus: indices must be 0..N-1 in order");
      if (!g.mig_enabled() && g.mig_slices_size() > 0) {
        return absl::InvalidArgumentError(absl::StrCat("gpus[", i, "].mig_slices: the GPU is not in MIG mode"));
      }
      uint8_t taken = 0;
      for (const v1::MigSlice& m : g.mig_slices()) {
        std::string why;
        if (AddMigInstance(*model, m.profile(), m.slot_start(), &taken, &why) == nullptr) {
          return absl::InvalidArgumentError(absl::StrCat("gpus[", i, "].mig_slices: ", why));
        }
      }
    }
    v1::RegisterRequest normalized = *req;
    normalized.set_gpu_model(model->name);
    if (absl::Status s = ctx_.nodes->Register(normalized, NowMs()); !s.ok()) return s;
    spdlog::info("node {} registered: {} x {} ({})", req->node(), req->gpus_size(), model->name, req->backend());
    resp->set_node(req->node());
    resp->set_heartbeat_interval_ms(ctx_.config.heartbeat_interval_ms);
    resp->set_preemption_notice_ms(ctx_.config.preemption_notice_ms);
    return absl::OkStatus();
  });
}

namespace {

// How often a stream writes its node's heartbeat when nothing changes: a quarter of the
// time after which a silent node is lost, and at most 2 s, so that a leader configured with
// a shorter --lost-after-ms than this replica still sees it alive.
int64_t HeartbeatEveryMs(int64_t lost_after_ms) { return std::clamp<int64_t>(lost_after_ms / 4, 1, 2000); }
// How often it writes the node's whole state (see TelemetryWriteFilter).
constexpr int64_t kWholeStateEveryMs = 10'000;

// One worker's stream. Messages are handled one at a time, in order, on the executor;
// after each telemetry message (and when nudged) the node's desired state is compared
// with what the worker runs, and assignments or stops are sent (level-triggered).
class ConnectReactor final : public grpc::ServerBidiReactor<v1::WorkerMessage, v1::ControlMessage>,
                             public WorkerHub::Conn {
 public:
  ConnectReactor(ApiContext& ctx, grpc::CallbackServerContext* c)
      : ctx_(ctx), rpc_ctx_(c), written_(HeartbeatEveryMs(ctx.config.harvest.lost_after_ms), kWholeStateEveryMs) {
    Ref();
    ctx_.executor->Submit([this] {
      auto p = ctx_.auth->Authorize(*rpc_ctx_, {v1::ROLE_WORKER});
      if (!p.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        FinishLocked(ToGrpc(p.status()));
      } else {
        Ref();
        StartRead(&in_);
      }
      Unref();
    });
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      std::lock_guard<std::mutex> lock(mu_);
      FinishLocked(grpc::Status::OK);
      Unref();  // the read's reference
      return;
    }
    ctx_.executor->Submit([this] {
      Handle(in_);
      bool finished;
      {
        std::lock_guard<std::mutex> lock(mu_);
        finished = finished_;
      }
      if (finished) {
        Unref();
      } else {
        StartRead(&in_);
      }
    });
  }

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
    if (!node_.empty()) ctx_.workers->Remove(node_, this);
    Unref();
  }

  void Nudge() override {
    Ref();
    ctx_.executor->Submit([this] {
      Reconcile();
      Unref();
    });
  }

 private:
  void Ref() { refs_.fetch_add(1); }
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  void Handle(const v1::WorkerMessage& msg) {
    if (msg.node().empty()) return;
    if (node_.empty()) {
      node_ = msg.node();
      ctx_.workers->Add(node_, this);
      spdlog::info("node {} connected", node_);
    } else if (msg.node() != node_) {
      return;  // one stream serves one node
    }
    const int64_t now = NowMs();
    absl::Status s;
    switch (msg.kind_case()) {
      case v1::WorkerMessage::kTelemetry: {
        // Only what changes something reaches the database (see TelemetryWriteFilter).
        if (auto due = written_.Due(store::TelemetryReport{node_, msg.telemetry(), now})) {
          s = ctx_.telemetry->AddAndWait(*due);
          if (s.ok()) {
            written_.Written(*due);
          } else {
            written_.Reset();
          }
        }
        bool changed;
        {
          std::lock_guard<std::mutex> lock(state_mu_);
          std::set<std::string> running(msg.telemetry().running_job_ids().begin(),
                                        msg.telemetry().running_job_ids().end());
          changed = running != running_;
          running_ = std::move(running);
        }
        // Changes of the desired jobs arrive as nudges (from any replica); telemetry
        // reconciles when the worker's jobs changed, and otherwise at most every
        // reconcile_interval_ms, to resend what a worker may have missed.
        if (changed || now - last_reconcile_ms_.load() >= ctx_.config.reconcile_interval_ms) Reconcile();
        break;
      }
      case v1::WorkerMessage::kStatus:
        s = ctx_.jobs->ApplyStatus(node_, msg.status(), now);
        if (s.ok() && msg.status().phase() != v1::JobStatus::PHASE_STARTED) {
          std::lock_guard<std::mutex> lock(state_mu_);
          running_.erase(msg.status().job_id());
        }
        break;
      case v1::WorkerMessage::kLog:
        s = ctx_.jobs->AppendLog(msg.log());
        break;
      default:
        break;
    }
    if (!s.ok()) spdlog::warn("node {}: could not record a worker message: {}", node_, s.ToString());
  }

  void Reconcile() {
    if (node_.empty()) return;
    last_reconcile_ms_ = NowMs();
    auto desired = ctx_.jobs->DesiredForNode(node_);
    if (!desired.ok()) return;
    const int64_t now = NowMs();
    std::vector<v1::ControlMessage> out;
    {
      std::lock_guard<std::mutex> lock(state_mu_);
      std::set<std::string> wanted;
      for (const auto& d : *desired) {
        const std::string& id = d.assignment.job_id();
        wanted.insert(id);
        const std::string key = absl::StrCat(id, "#", d.assignment.attempt(), d.stop_requested ? "#stop" : "");
        // Resend at most every 2 s until the worker's reports catch up.
        auto last = last_sent_.find(key);
        if (last != last_sent_.end() && now - last->second < 2000) continue;
        if (d.stop_requested) {
          v1::ControlMessage m;
          v1::Stop* stop = m.mutable_stop();
          stop->set_job_id(id);
          stop->set_attempt(d.assignment.attempt());
          stop->set_reason(d.stop_reason);
          stop->set_notice_ms(std::max<int64_t>(0, d.stop_deadline_ms - now));
          stop->set_preemption(d.preemption);
          out.push_back(std::move(m));
          last_sent_[key] = now;
        } else if (!running_.count(id)) {
          v1::ControlMessage m;
          *m.mutable_assign() = d.assignment;
          out.push_back(std::move(m));
          last_sent_[key] = now;
        }
      }
      // Jobs the worker runs that should not run here (ended, lost, moved): stop them.
      for (const auto& id : running_) {
        if (wanted.count(id)) continue;
        const std::string key = absl::StrCat(id, "#orphan");
        auto last = last_sent_.find(key);
        if (last != last_sent_.end() && now - last->second < 2000) continue;
        v1::ControlMessage m;
        m.mutable_stop()->set_job_id(id);
        m.mutable_stop()->set_attempt(-1);
        m.mutable_stop()->set_reason("the job is no longer assigned to this node");
        m.mutable_stop()->set_notice_ms(std::min<int64_t>(ctx_.config.preemption_notice_ms, 10'000));
        out.push_back(std::move(m));
        last_sent_[key] = now;
      }
      if (last_sent_.size() > 10'000) last_sent_.clear();
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& m : out) out_.Push(std::move(m));
    WriteNextLocked();
  }

  void WriteNextLocked() {
    if (finished_) return;
    if (const v1::ControlMessage* next = out_.Next()) StartWrite(next);
  }

  void FinishLocked(const grpc::Status& s) {
    if (finished_) return;
    finished_ = true;
    Finish(s);
  }

  ApiContext& ctx_;
  grpc::CallbackServerContext* rpc_ctx_;
  std::atomic<int> refs_{1};  // the gRPC side, dropped in OnDone
  v1::WorkerMessage in_;
  std::string node_;
  std::mutex mu_;  // writes and finish
  WriteQueue<v1::ControlMessage> out_;
  bool finished_ = false;
  std::mutex state_mu_;  // what the worker runs
  std::set<std::string> running_;
  std::map<std::string, int64_t> last_sent_;
  std::atomic<int64_t> last_reconcile_ms_{0};
  store::TelemetryWriteFilter written_;  // touched only by Handle(), one message at a time
};

}  // namespace

grpc::ServerBidiReactor<v1::WorkerMessage, v1::ControlMessage>* WorkerServiceImpl::Connect(
    grpc::CallbackServerContext* c) {
  return new ConnectReactor(ctx_, c);
}

void WorkerHub::Add(const std::string& node, Conn* c) {
  std::lock_guard<std::mutex> lock(mu_);
  conns_.emplace(node, c);
}

void WorkerHub::Remove(const std::string& node, Conn* c) {
  std::lock_guard<std::mutex> lock(mu_);
  auto range = conns_.equal_range(node);
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second == c) {
      conns_.erase(it);
      return;
    }
  }
}

void WorkerHub::Nudge(const std::string& node) { Nudge(std::vector<std::string>{node}); }

void WorkerHub::Nudge(const std::vector<std::string>& nodes) {
  if (nodes.empty()) return;
  NudgeHere(nodes);
  if (publish_) publish_(nodes);
}

void WorkerHub::NudgeHere(const std::vector<std::string>& nodes) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& node : nodes) {
    auto range = conns_.equal_range(node);
    for (auto it = range.first; it != range.second; ++it) it->second->Nudge();
  }
}

void WorkerHub::NudgeAll() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [node, c] : conns_) c->Nudge();
}

}  // namespace surplus::api
