#pragma once
// Conversions between absl::Status and grpc::Status, and protobuf timestamps.

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/timestamp.pb.h"

namespace surplus {

grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

void SetTimestampMs(int64_t epoch_ms, google::protobuf::Timestamp* ts);
int64_t TimestampMs(const google::protobuf::Timestamp& ts);

/// Wall-clock now, UTC epoch milliseconds.
int64_t NowMs();

/// Largest message either side accepts (requests and responses), in bytes.
inline constexpr int kMaxMessageBytes = 4 * 1024 * 1024;

/// Channel to `endpoint` ("host:port") with the project's limits; plaintext unless
/// `tls_ca_file` names a CA bundle to verify the server with.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& endpoint,
                                           const std::string& tls_ca_file = "");

/// Server credentials: plaintext when both paths are empty, else TLS with the PEM
/// certificate chain and private key read from them. InvalidArgument (naming the flag)
/// when only one is given or a file cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFromFiles(const std::string& cert_file,
                                                                                  const std::string& key_file);

/// Adds `authorization: Bearer <key>` to a client call.
void AddBearer(grpc::ClientContext* ctx, const std::string& api_key);

}  // namespace surplus
