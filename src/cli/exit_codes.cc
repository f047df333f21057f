#include "src/cli/exit_codes.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace surplus::cli {
namespace {

constexpr absl::string_view kUsagePayloadUrl = "surplus.cli/usage-error";

}  // namespace

const char kExitCodeHelp[] =
    "Exit codes:\n"
    "  0  ok\n"
    "  1  other failure (e.g. ALREADY_EXISTS, FAILED_PRECONDITION, RESOURCE_EXHAUSTED)\n"
    "  2  usage error: bad flags or values, nothing was sent\n"
    "  3  not found\n"
    "  4  unauthenticated or permission denied\n"
    "  5  the server rejected an argument (INVALID_ARGUMENT)\n"
    "  6  server unavailable or deadline exceeded\n"
    "  7  watch: the job ended in a state other than SUCCEEDED\n"
    "Errors print one line on stderr: surplus: error: <gRPC code name>: <message>";

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayloadUrl, absl::Cord("1"));
  return status;
}

absl::Status AsUsageError(const absl::Status& status) {
  if (status.ok()) return status;
  return UsageError(status.message());
}

bool IsUsageError(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kUsagePayloadUrl).has_value();
}

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  if (IsUsageError(status)) return kExitUsage;
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kExitNotAllowed;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return kExitRejected;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnavailable;
    default:
      return kExitFailure;
  }
}

std::string ErrorLine(const absl::Status& status) {
  std::string message(status.message());
  // One line, whatever the server sent.
  for (char& c : message) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  if (message.empty()) message = "(no details)";
  if (IsUsageError(status)) return absl::StrCat("surplus: error: usage: ", message);
  return absl::StrCat("surplus: error: ", absl::StatusCodeToString(status.code()), ": ", message);
}

}  // namespace surplus::cli
