#pragma once

#include <string>

namespace surplus {

/// Sets up the default spdlog logger: one line per event to stderr, at `level`
/// ("trace".."critical", "off"), as JSON objects when `json` is true.
void InitLogging(const std::string& name, const std::string& level, bool json);

}  // namespace surplus
