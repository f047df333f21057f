#pragma once
// Exit codes of the `surplus` CLI and the one-line error report on stderr.
//
//   0  ok
//   1  any other failure (e.g. ALREADY_EXISTS, FAILED_PRECONDITION, RESOURCE_EXHAUSTED)
//   2  usage error: bad flags or values, rejected before anything was sent
//   3  not found (NOT_FOUND)
//   4  not allowed (UNAUTHENTICATED, PERMISSION_DENIED)
//   5  the server rejected an argument (INVALID_ARGUMENT, OUT_OF_RANGE)
//   6  server unreachable or too slow (UNAVAILABLE, DEADLINE_EXCEEDED)
//   7  `watch`: the job ended in a state other than SUCCEEDED
//
// Errors print as one line: `surplus: error: <gRPC code name>: <message>`, or
// `surplus: error: usage: <message>` for exit code 2.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace surplus::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,
  kExitUsage = 2,
  kExitNotFound = 3,
  kExitNotAllowed = 4,
  kExitRejected = 5,
  kExitUnavailable = 6,
  kExitJobNotSucceeded = 7,
};

/// The text of the exit-code table, for --help.
extern const char kExitCodeHelp[];

/// An InvalidArgument status marked as a local usage error (exit code 2), so it is
/// told apart from a server's INVALID_ARGUMENT (exit code 5).
absl::Status UsageError(absl::string_view message);
/// Marks `status` (not OK) as a usage error, keeping its message.
absl::Status AsUsageError(const absl::Status& status);
bool IsUsageError(const absl::Status& status);

/// Exit code for a failed call or validation; kExitOk for OK.
int ExitCodeFor(const absl::Status& status);

/// "surplus: error: NOT_FOUND: job j-1 not found" (no trailing newline).
std::string ErrorLine(const absl::Status& status);

}  // namespace surplus::cli
