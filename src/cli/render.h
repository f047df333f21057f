#pragma once
// Text rendering for the `surplus` CLI: aligned tables, CSV, money and GPU-hours.
// Pure: strings in, strings out; integers only for money and usage.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "surplus/money.h"

namespace surplus::cli {

/// Rows of cells under headers. Renders as an aligned text table (columns separated
/// by two spaces, the last column unpadded, empty cells as "-") or as RFC 4180 CSV.
class Table {
 public:
  explicit Table(std::vector<std::string> headers);

  /// A row with exactly as many cells as there are headers.
  void AddRow(std::vector<std::string> cells);

  size_t size() const { return rows_.size(); }
  std::string RenderText() const;
  std::string RenderCsv() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

/// Labelled fields of one object, in display order.
using Details = std::vector<std::pair<std::string, std::string>>;

/// "label:  value" lines with the values aligned; empty values as "-".
std::string RenderDetailsText(const Details& details);

/// The same fields as a two-column table (field, value), e.g. for CSV.
Table DetailsTable(const Details& details);

/// Quotes a CSV field when it holds a comma, quote, CR or LF.
std::string CsvField(absl::string_view field);

/// "$2.10/GPU-h".
std::string FormatPricePerGpuHour(Micros micros_per_gpu_hour);

/// Dollars without the sign, for CSV: "2.10", "0.000001", "-1.50".
std::string FormatUsdPlain(Micros micros);

/// GPU-milliseconds as GPU-hours with three decimals, rounded half to even:
/// 5'400'000 -> "1.500"; 1'800 -> "0.000" (0.0005 rounds to even).
std::string FormatGpuHours(int64_t gpu_ms);

/// UTC epoch milliseconds as "2025-03-01T12:00:00Z"; 0 (unset) as "" (tables show "-").
std::string FormatTimestampMs(int64_t epoch_ms);

/// Milliseconds as "1h30m", "10s", "2s500ms"; 0 -> "0s".
std::string FormatDurationMs(int64_t ms);

}  // namespace surplus::cli
