#include "src/common/logging.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace surplus {

void InitLogging(const std::string& name, const std::string& level, bool json) {
  auto logger = spdlog::stderr_logger_mt(name);
  if (json) {
    // Messages are escaped by the callers that log user text (see JsonEscape in call sites);
    // the pattern itself keeps one object per line.
    logger->set_pattern(
        R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","logger":"%n","tid":%t,"msg":"%v"})",
        spdlog::pattern_time_type::utc);
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ [%n] %v", spdlog::pattern_time_type::utc);
  }
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace surplus
