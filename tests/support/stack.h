#pragma once
// Starts real Surplus binaries on loopback ports against a private PostgreSQL database,
// for integration and end-to-end tests.

#include <memory>
#include <string>
#include <vector>

#include "src/common/grpc_util.h"
#include "surplus/v1/billing.grpc.pb.h"
#include "surplus/v1/finance.grpc.pb.h"
#include "surplus/v1/operator.grpc.pb.h"
#include "surplus/v1/tenant.grpc.pb.h"
#include "surplus/v1/worker.grpc.pb.h"
#include "tests/support/pg_instance.h"
#include "tests/support/process.h"

namespace surplus::testing {

/// Paths of the binaries under test (set by the build).
std::string ControlBin();
std::string BillingBin();
std::string WorkerBin();
std::string CliBin();

struct StackOptions {
  std::vector<std::string> control_args;  ///< extra flags for surplus-control serve
  bool billing = false;
  /// Serve TLS (a self-signed certificate for 127.0.0.1 made with openssl); clients and
  /// workers verify it with tls_ca().
  bool tls = false;
};

/// One control plane (and optionally billing) on a fresh database.
class Stack {
 public:
  explicit Stack(const std::string& name, StackOptions opts = {});
  ~Stack();

  void StartControl();
  void KillControl();  ///< SIGKILL
  /// Starts another surplus-control replica on the same database (it follows the first,
  /// which leads the scheduling); returns its gRPC endpoint. `extra`: flags for it only.
  std::string StartReplica(const std::vector<std::string>& extra = {});
  void StartBilling();
  void KillBilling();

  /// Starts a simulated worker node; returns its index for KillWorker. `endpoint`: the
  /// replica it streams to (default: the first).
  int StartWorker(const std::string& node, int gpus, const std::vector<std::string>& extra = {},
                  const std::string& endpoint = "");
  void KillWorker(int index);

  std::string endpoint() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  std::string billing_endpoint() const { return "127.0.0.1:" + std::to_string(billing_port_); }
  std::string http() const { return "127.0.0.1:" + std::to_string(http_port_); }
  const std::string& database_url() const { return db_url_; }
  const std::string& dir() const { return dir_; }
  const std::string& operator_key() const { return operator_key_; }
  /// The CA bundle clients use (empty without TLS).
  std::string tls_ca() const { return opts_.tls ? dir_ + "/tls/cert.pem" : ""; }
  std::string control_log() const { return ReadFile(dir_ + "/control.log"); }

  /// Creates a tenant and a key for it; returns the key.
  std::string CreateTenant(const std::string& id);
  /// Issues a key of `role` (operator call).
  std::string IssueKey(surplus::v1::Role role, const std::string& tenant = "", std::string* key_id = nullptr);

  std::unique_ptr<surplus::v1::TenantService::Stub> Tenant() const;
  std::unique_ptr<surplus::v1::OperatorService::Stub> Operator() const;
  std::unique_ptr<surplus::v1::FinanceService::Stub> Finance() const;

  /// Runs `psql -tA -c sql` on the stack's database and returns the output.
  std::string Sql(const std::string& sql) const;

 private:
  std::string name_;
  StackOptions opts_;
  std::string dir_;
  std::string db_url_;
  int grpc_port_ = 0;
  int http_port_ = 0;
  int billing_port_ = 0;
  std::string operator_key_;
  // argv of a control replica serving on these ports.
  std::vector<std::string> ControlArgv(int grpc_port, int http_port, const std::string& key_file) const;

  Child control_;
  std::vector<Child> replicas_;
  Child billing_;
  std::vector<Child> workers_;
  std::shared_ptr<grpc::Channel> channel_;
};

/// A client context with a bearer key and a deadline.
std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key, int timeout_ms = 10000);

}  // namespace surplus::testing
