#include "tests/support/stack.h"

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace surplus::testing {
namespace v1 = surplus::v1;

std::string ControlBin() { return SURPLUS_CONTROL_BIN; }
std::string BillingBin() { return SURPLUS_BILLING_BIN; }
std::string WorkerBin() { return SURPLUS_WORKER_BIN; }
std::string CliBin() { return SURPLUS_CLI_BIN; }

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key, int timeout_ms) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!key.empty()) AddBearer(ctx.get(), key);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  return ctx;
}

Stack::Stack(const std::string& name, StackOptions opts) : name_(name), opts_(std::move(opts)) {
  dir_ = MakeTempDir("surplus-stack-");
  db_url_ = SharedPg().CreateDatabase(name);
  grpc_port_ = FreePort();
  http_port_ = FreePort();
  billing_port_ = FreePort();
  std::string out;
  if (RunCommand({ControlBin(), "migrate", "--database-url", db_url_}, &out) != 0) {
    throw std::runtime_error("migrate failed: " + out);
  }
  if (opts_.tls) {
    RunCommand({"mkdir", "-p", dir_ + "/tls"}, &out);
    if (RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", dir_ + "/tls/key.pem",
                    "-out", dir_ + "/tls/cert.pem"},
                   &out) != 0) {
      throw std::runtime_error("openssl could not make a certificate: " + out);
    }
  }
  StartControl();
  operator_key_ = std::string(absl::StripAsciiWhitespace(ReadFile(dir_ + "/operator.key")));
  if (opts_.billing) StartBilling();
}

Stack::~Stack() {
  workers_.clear();
  replicas_.clear();
  control_ = Child();
  billing_ = Child();
  std::string out;
  RunCommand({"rm", "-rf", dir_}, &out);
}

std::vector<std::string> Stack::ControlArgv(int grpc_port, int http_port, const std::string& key_file) const {
  std::vector<std::string> argv = {ControlBin(),
                                   "serve",
                                   "--database-url",
                                   db_url_,
                                   "--listen",
                                   "127.0.0.1:" + std::to_string(grpc_port),
                                   "--http-listen",
                                   "127.0.0.1:" + std::to_string(http_port),
                                   "--operator-key-file",
                                   key_file,
                                   "--round-ms",
                                   "200",
                                   "--log-level",
                                   "info"};
  // Tests offer idle GPUs at once unless they set a harvest window themselves.
  if (std::find(opts_.control_args.begin(), opts_.control_args.end(), "--owner-idle-window-ms") ==
      opts_.control_args.end()) {
    argv.insert(argv.end(), {"--owner-idle-window-ms", "0"});
  }
  if (opts_.tls) argv.insert(argv.end(), {"--tls-cert", tls_ca(), "--tls-key", dir_ + "/tls/key.pem"});
  for (const auto& a : opts_.control_args) argv.push_back(a);
  return argv;
}

void Stack::StartControl() {
  control_ = Child(ControlArgv(grpc_port_, http_port_, dir_ + "/operator.key"), dir_ + "/control.log");
  channel_ = MakeChannel(endpoint(), tls_ca());
  if (!channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(20))) {
    throw std::runtime_error("surplus-control did not start: " + control_log());
  }
}

std::string Stack::StartReplica(const std::vector<std::string>& extra) {
  const int n = static_cast<int>(replicas_.size()) + 2;
  const int port = FreePort();
  const std::string endpoint = "127.0.0.1:" + std::to_string(port);
  std::vector<std::string> argv =
      ControlArgv(port, FreePort(), dir_ + "/operator-" + std::to_string(n) + ".key");
  for (const auto& a : extra) argv.push_back(a);
  const std::string log = dir_ + "/control-" + std::to_string(n) + ".log";
  replicas_.emplace_back(argv, log);
  if (!MakeChannel(endpoint, tls_ca())->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(20))) {
    throw std::runtime_error("surplus-control replica did not start: " + ReadFile(log));
  }
  return endpoint;
}

void Stack::KillControl() { control_.Stop(SIGKILL); }

void Stack::StartBilling() {
  std::vector<std::string> argv = {BillingBin(), "--database-url", db_url_, "--listen", billing_endpoint()};
  if (opts_.tls) argv.insert(argv.end(), {"--tls-cert", tls_ca(), "--tls-key", dir_ + "/tls/key.pem"});
  billing_ = Child(argv, dir_ + "/billing.log");
  auto ch = MakeChannel(billing_endpoint(), tls_ca());
  if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(20))) {
    throw std::runtime_error("surplus-billing did not start: " + ReadFile(dir_ + "/billing.log"));
  }
}

void Stack::KillBilling() { billing_.Stop(SIGKILL); }

int Stack::StartWorker(const std::string& node, int gpus, const std::vector<std::string>& extra,
                        const std::string& endpoint) {
  const std::string key = IssueKey(v1::ROLE_WORKER);
  const std::string control = endpoint.empty() ? this->endpoint() : endpoint;
  std::vector<std::string> argv = {WorkerBin(),         "--node",          node,
                                   "--gpus",            std::to_string(gpus),
                                   "--control-endpoint", control,        "--billing-endpoint",
                                   billing_endpoint(),  "--state-dir",     dir_ + "/worker-" + node,
                                   "--telemetry-ms",    "200",           "--usage-interval-ms",
                                   "1000"};
  // Jobs get their own cgroups only in the tests that ask for them (they leave folders
  // in the host's cgroup tree).
  if (std::find(extra.begin(), extra.end(), "--job-cgroups") == extra.end()) {
    argv.insert(argv.end(), {"--job-cgroups", "off"});
  }
  if (opts_.tls) argv.insert(argv.end(), {"--tls-ca", tls_ca()});
  for (const auto& a : extra) argv.push_back(a);
  workers_.emplace_back(argv, dir_ + "/worker-" + node + ".log", std::map<std::string, std::string>{{"SURPLUS_API_KEY", key}});
  return static_cast<int>(workers_.size()) - 1;
}

void Stack::KillWorker(int index) { workers_[static_cast<size_t>(index)].Stop(SIGKILL); }

std::string Stack::IssueKey(v1::Role role, const std::string& tenant, std::string* key_id) {
  v1::IssueApiKeyRequest req;
  req.set_role(role);
  req.set_tenant_id(tenant);
  v1::IssueApiKeyResponse resp;
  auto ctx = Ctx(operator_key_);
  grpc::Status s = Operator()->IssueApiKey(ctx.get(), req, &resp);
  if (!s.ok()) throw std::runtime_error("IssueApiKey: " + s.error_message());
  if (key_id) *key_id = resp.key_id();
  return resp.api_key();
}

std::string Stack::CreateTenant(const std::string& id) {
  v1::CreateTenantRequest req;
  req.set_id(id);
  req.set_display_name(id);
  v1::Tenant t;
  auto ctx = Ctx(operator_key_);
  grpc::Status s = Operator()->CreateTenant(ctx.get(), req, &t);
  if (!s.ok()) throw std::runtime_error("CreateTenant: " + s.error_message());
  return IssueKey(v1::ROLE_TENANT, id);
}

std::unique_ptr<v1::TenantService::Stub> Stack::Tenant() const { return v1::TenantService::NewStub(channel_); }
std::unique_ptr<v1::OperatorService::Stub> Stack::Operator() const { return v1::OperatorService::NewStub(channel_); }
std::unique_ptr<v1::FinanceService::Stub> Stack::Finance() const { return v1::FinanceService::NewStub(channel_); }

std::string Stack::Sql(const std::string& sql) const {
  std::string out;
  RunCommand({"psql", db_url_, "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql}, &out, false);
  return std::string(absl::StripTrailingAsciiWhitespace(out));
}

}  // namespace surplus::testing
