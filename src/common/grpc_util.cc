#include "src/common/grpc_util.h"

#include <chrono>
#include <fstream>
#include <sstream>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace surplus {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

void SetTimestampMs(int64_t epoch_ms, google::protobuf::Timestamp* ts) {
  int64_t secs = epoch_ms / 1000;
  int64_t ms = epoch_ms % 1000;
  if (ms < 0) {
    ms += 1000;
    --secs;
  }
  ts->set_seconds(secs);
  ts->set_nanos(static_cast<int32_t>(ms * 1'000'000));
}

int64_t TimestampMs(const google::protobuf::Timestamp& ts) {
  return ts.seconds() * 1000 + ts.nanos() / 1'000'000;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& endpoint,
                                           const std::string& tls_ca_file) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // Reconnect quickly after a server restart.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (tls_ca_file.empty()) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    std::ifstream in(tls_ca_file);
    std::stringstream ss;
    ss << in.rdbuf();
    grpc::SslCredentialsOptions opts;
    opts.pem_root_certs = ss.str();
    creds = grpc::SslCredentials(opts);
  }
  return grpc::CreateCustomChannel(endpoint, creds, args);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFromFiles(const std::string& cert_file,
                                                                                  const std::string& key_file) {
  if (cert_file.empty() && key_file.empty()) return grpc::InsecureServerCredentials();
  if (cert_file.empty() || key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key: give both, or neither for plaintext");
  }
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  for (const auto& [flag, path, out] : {std::tuple{"--tls-cert", &cert_file, &pair.cert_chain},
                                        std::tuple{"--tls-key", &key_file, &pair.private_key}}) {
    std::ifstream in(*path);
    std::stringstream ss;
    ss << in.rdbuf();
    *out = ss.str();
    if (!in || out->find("-----BEGIN") == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read a PEM file at ", *path));
    }
  }
  grpc::SslServerCredentialsOptions opts;
  opts.pem_key_cert_pairs.push_back(std::move(pair));
  return grpc::SslServerCredentials(opts);
}

void AddBearer(grpc::ClientContext* ctx, const std::string& api_key) {
  ctx->AddMetadata("authorization", "Bearer " + api_key);
}

}  // namespace surplus
