// surplus: the command-line client for tenants, operators and finance.
//
// Exit codes (also in --help):
//   0 ok; 1 other failure; 2 usage error (bad flags, nothing sent); 3 not found;
//   4 unauthenticated or permission denied; 5 INVALID_ARGUMENT from the server;
//   6 unavailable or deadline exceeded; 7 `watch`: the job did not SUCCEED.
// Errors are one line on stderr: `surplus: error: <gRPC code name>: <message>`.

#include <iostream>
#include <string>
#include <vector>

#include "src/cli/api_client.h"
#include "src/cli/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return surplus::cli::RunCli(
      args,
      [](const surplus::cli::ConnectionOptions& options) {
        return surplus::cli::ApiClient::Connect(options);
      },
      std::cout, std::cerr);
}
