#include "src/cli/render.h"

#include <algorithm>
#include <cassert>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace surplus::cli {

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::AddRow(std::vector<std::string> cells) {
  assert(cells.size() == headers_.size());
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::RenderText() const {
  auto shown = [](const std::string& cell) -> const std::string& {
    static const std::string kDash = "-";
    return cell.empty() ? kDash : cell;
  };
  std::vector<size_t> width(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) width[c] = headers_[c].size();
  for (const auto& row : rows_) {
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], shown(row[c]).size());
  }
  std::string out;
  auto emit = [&](const std::vector<std::string>& cells, bool header) {
    std::string line;
    for (size_t c = 0; c < cells.size(); ++c) {
      const std::string& text = header ? cells[c] : shown(cells[c]);
      line += text;
      if (c + 1 < cells.size()) line.append(width[c] - text.size() + 2, ' ');
    }
    out += line;
    out += '\n';
  };
  emit(headers_, true);
  for (const auto& row : rows_) emit(row, false);
  return out;
}

std::string RenderDetailsText(const Details& details) {
  size_t width = 0;
  for (const auto& [label, value] : details) width = std::max(width, label.size() + 1);
  std::string out;
  for (const auto& [label, value] : details) {
    out += label;
    out += ':';
    out.append(width - label.size() - 1 + 2, ' ');
    out += value.empty() ? "-" : value;
    out += '\n';
  }
  return out;
}

Table DetailsTable(const Details& details) {
  Table table({"field", "value"});
  for (const auto& [label, value] : details) table.AddRow({label, value});
  return table;
}

std::string CsvField(absl::string_view field) {
  if (field.find_first_of(",\"\r\n") == absl::string_view::npos) return std::string(field);
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string Table::RenderCsv() const {
  std::string out;
  auto emit = [&](const std::vector<std::string>& cells) {
    for (size_t c = 0; c < cells.size(); ++c) {
      if (c > 0) out += ',';
      out += CsvField(cells[c]);
    }
    out += "\r\n";
  };
  emit(headers_);
  for (const auto& row : rows_) emit(row);
  return out;
}

std::string FormatPricePerGpuHour(Micros micros_per_gpu_hour) {
  return absl::StrCat(FormatUsd(micros_per_gpu_hour), "/GPU-h");
}

std::string FormatUsdPlain(Micros micros) {
  std::string s = FormatUsd(micros);
  const size_t dollar = s.find('$');
  if (dollar != std::string::npos) s.erase(dollar, 1);
  return s;
}

std::string FormatGpuHours(int64_t gpu_ms) {
  // Thousandths of a GPU-hour: one thousandth is 3'600 GPU-ms. Round half to even on
  // magnitudes (64-bit is enough: the quotient is smaller than the input).
  constexpr uint64_t kMsPerThousandth = kMsPerHour / 1000;
  const bool negative = gpu_ms < 0;
  const uint64_t mag_ms =
      negative ? static_cast<uint64_t>(-(gpu_ms + 1)) + 1 : static_cast<uint64_t>(gpu_ms);
  uint64_t q = mag_ms / kMsPerThousandth;
  const uint64_t r = mag_ms % kMsPerThousandth;
  if (2 * r > kMsPerThousandth || (2 * r == kMsPerThousandth && q % 2 == 1)) ++q;
  std::string frac = std::to_string(q % 1000);
  frac.insert(0, 3 - frac.size(), '0');
  return absl::StrCat(negative && q > 0 ? "-" : "", q / 1000, ".", frac);
}

std::string FormatTimestampMs(int64_t epoch_ms) {
  if (epoch_ms == 0) return "";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(epoch_ms),
                          absl::UTCTimeZone());
}

std::string FormatDurationMs(int64_t ms) {
  if (ms == 0) return "0s";
  std::string out;
  if (ms < 0) {
    out = "-";
    ms = -ms;
  }
  const int64_t h = ms / 3'600'000;
  const int64_t m = ms / 60'000 % 60;
  const int64_t s = ms / 1000 % 60;
  const int64_t rest = ms % 1000;
  if (h > 0) absl::StrAppend(&out, h, "h");
  if (m > 0) absl::StrAppend(&out, m, "m");
  if (s > 0) absl::StrAppend(&out, s, "s");
  if (rest > 0) absl::StrAppend(&out, rest, "ms");
  return out;
}

}  // namespace surplus::cli
