#pragma once
// The `surplus` command line: flag definitions, local validation, the calls each
// command makes and what it prints. main() is a thin shell around RunCli so the whole
// CLI can be driven in tests against an in-process server.
//
// Exit codes: see exit_codes.h (0 ok, 1 other, 2 usage, 3 not found, 4 not allowed,
// 5 rejected by the server, 6 unavailable/deadline, 7 watched job did not succeed).

#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/cli/api_client.h"
#include "surplus/v1/common.pb.h"

namespace surplus::cli {

/// Makes the client once the command line is known to be valid.
using ClientFactory = std::function<std::unique_ptr<ApiClient>(const ConnectionOptions&)>;

/// Runs `surplus` with `args` (argv without the program name), printing results to
/// `out` and errors (one line each) to `err`. Returns the process exit code.
int RunCli(const std::vector<std::string>& args, const ClientFactory& connect, std::ostream& out,
           std::ostream& err);

/// The shape flags shared by `submit` and `quote`; exactly one must be set.
struct ShapeOptions {
  std::string slice;  ///< --slice 1g.10gb
  std::string gpus;   ///< --gpus N
  std::string gang;   ///< --gang KxN
  std::string cpus;   ///< --cpus 4 (per node)
  std::string memory; ///< --memory 64Gi (per node)
};

/// `submit` flags as typed on the command line.
struct SubmitOptions {
  ShapeOptions shape;
  std::string tier = "spot";
  std::string bid;           ///< dollars per GPU-hour, e.g. "2.10"
  std::string max_runtime;   ///< duration, e.g. "30m"; empty = no limit
  std::string model;
  std::string request_id;    ///< empty = left empty (RunCli fills a random one)
  std::string name;
  bool requeue = false;
  std::vector<std::string> env;     ///< KEY=VALUE, exec only
  std::string builtin;              ///< sleep | gemm | allreduce
  std::string duration;             ///< builtin run time
  std::vector<std::string> params;  ///< KEY=VALUE, builtin only
  std::vector<std::string> argv;    ///< after `--`
};

/// Validates the shape flags and builds the proto; InvalidArgument naming the flag.
absl::StatusOr<v1::Shape> BuildShape(const ShapeOptions& options);

/// Validates `submit` flags and builds the spec, exactly (money in micro-dollars).
/// Errors are InvalidArgument with a message that starts with the offending flag.
absl::StatusOr<v1::JobSpec> BuildJobSpec(const SubmitOptions& options);

/// Parses "running,pending" (case-insensitive, with or without JOB_STATE_) into states.
absl::StatusOr<std::vector<v1::JobState>> ParseJobStates(const std::vector<std::string>& items);

}  // namespace surplus::cli
