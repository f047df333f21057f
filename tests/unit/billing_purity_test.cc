// The billing logic library stays pure: no service, storage, logging or GPU headers and
// no clock or file access in billing/*.h and billing/*.cc (billing/service/ is exempt).

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace {

TEST(BillingPurity, NoForbiddenIncludes) {
  const std::filesystem::path dir = std::filesystem::path(SURPLUS_SOURCE_DIR) / "billing";
  const char* forbidden[] = {"grpc",   "google/protobuf", "pqxx",     "spdlog", "cuda",
                             "nvml",   "<chrono>",        "<ctime>",  "<fstream>",
                             "<iostream>", "<cstdio>",    "absl/time", "nlohmann"};
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string ext = entry.path().extension().string();
    if (!entry.is_regular_file() || (ext != ".h" && ext != ".cc")) continue;
    ++files;
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("#include", 0) != 0) continue;
      for (const char* bad : forbidden) {
        EXPECT_EQ(line.find(bad), std::string::npos) << entry.path() << ": " << line;
      }
    }
  }
  EXPECT_GT(files, 0);
}

}  // namespace
