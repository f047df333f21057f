// A Node.js client that links no project code calls the real server, finding the services
// through gRPC reflection and calling them from the .proto files alone.

#include <gtest/gtest.h>

#include "tests/support/stack.h"

namespace surplus::testing {
namespace {

TEST(Reflection, ClientFromProtoFilesAndReflectionCallsTheServices) {
  Stack stack("reflection");
  std::string out;
  const int rc = RunCommand({"bash", std::string(SURPLUS_REFLECTION_CLIENT_DIR) + "/run.sh"}, &out, true,
                            {{"SURPLUS_ENDPOINT", stack.endpoint()}, {"SURPLUS_API_KEY", stack.operator_key()}});
  EXPECT_EQ(rc, 0) << out;
}

}  // namespace
}  // namespace surplus::testing
