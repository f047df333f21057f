#include "src/cli/parse.h"

#include <cctype>
#include <limits>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace surplus::cli {
namespace {

bool AllDigits(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<int64_t> ParseDurationMs(absl::string_view text) {
  const std::string original(text);
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad duration '", original, "': ", why, " (use e.g. 30m, 1h30m, 10s, 500ms)"));
  };
  if (text.empty()) return bad("empty");
  if (AllDigits(text)) {
    int64_t secs = 0;
    if (!absl::SimpleAtoi(text, &secs) || secs > std::numeric_limits<int64_t>::max() / 1000) {
      return bad("too large");
    }
    return secs * 1000;
  }
  int64_t total = 0;
  while (!text.empty()) {
    size_t n = 0;
    while (n < text.size() && std::isdigit(static_cast<unsigned char>(text[n]))) ++n;
    if (n == 0) return bad("expected a number");
    int64_t value = 0;
    if (!absl::SimpleAtoi(text.substr(0, n), &value)) return bad("too large");
    text.remove_prefix(n);
    int64_t unit_ms = 0;
    if (absl::ConsumePrefix(&text, "ms")) {
      unit_ms = 1;
    } else if (absl::ConsumePrefix(&text, "s")) {
      unit_ms = 1000;
    } else if (absl::ConsumePrefix(&text, "m")) {
      unit_ms = 60'000;
    } else if (absl::ConsumePrefix(&text, "h")) {
      unit_ms = 3'600'000;
    } else if (absl::ConsumePrefix(&text, "d")) {
      unit_ms = 86'400'000;
    } else {
      return bad("unknown or missing unit");
    }
    if (value > (std::numeric_limits<int64_t>::max() - total) / unit_ms) return bad("too large");
    total += value * unit_ms;
  }
  return total;
}

absl::StatusOr<Micros> ParsePriceMicros(absl::string_view text) {
  if (!text.empty() && text.front() == '-') {
    return absl::InvalidArgumentError(absl::StrCat("price '", text, "' is negative"));
  }
  return ParseUsd(text, kMaxPriceMicrosPerGpuHour);
}

absl::StatusOr<int64_t> ParseCpuMillis(absl::string_view text) {
  constexpr int64_t kMax = 4096LL * 1000;
  const auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("bad CPU count '", text, "': use CPUs like 4 or 0.5, or millicores like 500m"));
  };
  int64_t millis = 0;
  if (!text.empty() && text.back() == 'm') {
    const absl::string_view digits = text.substr(0, text.size() - 1);
    if (digits.empty() || digits.size() > 10 || !AllDigits(digits) || !absl::SimpleAtoi(digits, &millis)) return bad();
  } else {
    const size_t dot = text.find('.');
    const absl::string_view whole = text.substr(0, dot);
    const absl::string_view frac = dot == absl::string_view::npos ? absl::string_view() : text.substr(dot + 1);
    if (whole.size() > 7 || !AllDigits(whole) || frac.size() > 3 ||
        (dot != absl::string_view::npos && !AllDigits(frac))) {
      return bad();
    }
    int64_t w = 0;
    if (!absl::SimpleAtoi(whole, &w)) return bad();
    int64_t f = 0;
    for (size_t i = 0; i < 3; ++i) f = f * 10 + (i < frac.size() ? frac[i] - '0' : 0);
    millis = w * 1000 + f;
  }
  if (millis < 1 || millis > kMax) {
    return absl::InvalidArgumentError(absl::StrCat("CPU count '", text, "' out of range: 1m to 4096 CPUs"));
  }
  return millis;
}

absl::StatusOr<int64_t> ParseMemoryMib(absl::string_view text) {
  constexpr int64_t kMax = 64LL * 1024 * 1024;
  size_t end = 0;
  while (end < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[end]))) ++end;
  const absl::string_view digits = text.substr(0, end);
  std::string unit = absl::AsciiStrToLower(text.substr(end));
  if (!unit.empty() && unit.back() == 'b') unit.pop_back();  // "GiB" -> "gi"
  int64_t n = 0;
  int64_t scale = 0;
  if (unit.empty() || unit == "mi") scale = 1;
  if (unit == "gi") scale = 1024;
  if (unit == "ti") scale = 1024 * 1024;
  if (digits.empty() || digits.size() > 12 || scale == 0 || !absl::SimpleAtoi(digits, &n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad memory size '", text, "': use a whole number with Mi, Gi or Ti, e.g. 64Gi"));
  }
  if (n < 1 || n > kMax / scale) {
    return absl::InvalidArgumentError(absl::StrCat("memory size '", text, "' out of range: 1Mi to 64Ti"));
  }
  return n * scale;
}

absl::StatusOr<Tier> ParseTier(absl::string_view text) {
  const std::string t = absl::AsciiStrToLower(text);
  if (t == "spot") return Tier::kSpot;
  if (t == "on-demand" || t == "on_demand" || t == "ondemand") return Tier::kOnDemand;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown tier '", text, "': use spot or on-demand"));
}

absl::StatusOr<GangSize> ParseGang(absl::string_view text) {
  const size_t x = text.find_first_of("xX");
  int nodes = 0;
  int gpus = 0;
  if (x == absl::string_view::npos || !AllDigits(text.substr(0, x)) ||
      !AllDigits(text.substr(x + 1)) || !absl::SimpleAtoi(text.substr(0, x), &nodes) ||
      !absl::SimpleAtoi(text.substr(x + 1), &gpus)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad gang '", text, "': use KxN, e.g. 2x8 for 2 nodes of 8 GPUs"));
  }
  if (nodes < 1 || nodes > 1024 || gpus < 1 || gpus > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad gang '", text, "': nodes and GPUs per node must be 1 to 1024"));
  }
  return GangSize{nodes, gpus};
}

absl::StatusOr<std::pair<std::string, std::string>> ParseKeyValue(absl::string_view text) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad pair '", text, "': use KEY=VALUE"));
  }
  return std::make_pair(std::string(text.substr(0, eq)), std::string(text.substr(eq + 1)));
}

absl::StatusOr<std::vector<int>> ParseIndexList(absl::string_view text) {
  std::vector<int> out;
  std::set<int> seen;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    int v = 0;
    if (!AllDigits(part) || !absl::SimpleAtoi(part, &v) || v > 1023) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad GPU index list '", text, "': use e.g. 0,1,3"));
    }
    if (!seen.insert(v).second) {
      return absl::InvalidArgumentError(absl::StrCat("GPU index ", v, " repeated in '", text, "'"));
    }
    out.push_back(v);
  }
  return out;
}

absl::Status ValidatePeriod(absl::string_view text) {
  int year = 0;
  int month = 0;
  if (text.size() != 7 || text[4] != '-' || !AllDigits(text.substr(0, 4)) ||
      !AllDigits(text.substr(5, 2)) || !absl::SimpleAtoi(text.substr(0, 4), &year) ||
      !absl::SimpleAtoi(text.substr(5, 2), &month) || year < 1 || month < 1 || month > 12) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad period '", text, "': use YYYY-MM, e.g. 2025-03"));
  }
  return absl::OkStatus();
}

absl::Status ValidateTenantId(absl::string_view text) {
  bool ok = !text.empty() && text.size() <= 63 && text[0] >= 'a' && text[0] <= 'z';
  for (char c : text) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad tenant id '", text,
        "': use 1 to 63 lower-case letters, digits and '-', starting with a letter"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePositive(int64_t value, int64_t max, absl::string_view what) {
  if (value < 1 || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be between 1 and ", max, ", got ", value));
  }
  return absl::OkStatus();
}

absl::Status ForFlag(absl::string_view flag, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(flag, ": ", status.message()));
}

}  // namespace surplus::cli
