#include "billing/render.h"

#include <algorithm>
#include <array>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace surplus::billing {

std::string FormatGpuHours(int64_t gpu_ms) {
  // Thousandths of an hour are 3,600 ms.
  const int64_t thousandths = static_cast<int64_t>(DivRoundHalfEven(gpu_ms, kMsPerHour / 1000));
  const bool negative = thousandths < 0;
  const uint64_t mag = negative ? 0 - static_cast<uint64_t>(thousandths)
                                : static_cast<uint64_t>(thousandths);
  return absl::StrFormat("%s%d.%03d", negative ? "-" : "", mag / 1000, mag % 1000);
}

std::string FormatUsdDecimal(Micros micros) {
  std::string s = FormatUsd(micros);
  s.erase(s.find('$'), 1);
  return s;
}

std::string CsvField(absl::string_view text) {
  if (text.find_first_of(",\"\r\n") == absl::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string JsonString(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (u < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", u);
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

namespace {

std::string CsvRow(const std::vector<std::string>& fields) {
  std::vector<std::string> quoted;
  quoted.reserve(fields.size());
  for (const std::string& f : fields) quoted.push_back(CsvField(f));
  return absl::StrCat(absl::StrJoin(quoted, ","), "\r\n");
}

}  // namespace

std::string RenderInvoiceCsv(const Invoice& invoice) {
  const std::string month = invoice.month.Label();
  const std::string status(InvoiceStatusName(invoice.status));
  std::string out = CsvRow({"invoice_number", "tenant_id", "month", "status", "row", "job_id",
                            "gpu_model", "shape", "gpu_ms", "gpu_hours",
                            "avg_price_usd_per_gpu_hour", "amount_usd", "amount_micros"});
  int64_t gpu_ms = 0;
  for (const InvoiceLine& l : invoice.lines) {
    gpu_ms += l.gpu_ms;
    out += CsvRow({invoice.invoice_number, invoice.tenant_id, month, status, "line", l.job_id,
                   l.gpu_model, l.shape, absl::StrCat(l.gpu_ms), FormatGpuHours(l.gpu_ms),
                   FormatUsdDecimal(l.average_price_per_gpu_hour), FormatUsdDecimal(l.amount),
                   absl::StrCat(l.amount)});
  }
  out += CsvRow({invoice.invoice_number, invoice.tenant_id, month, status, "total", "", "", "",
                 absl::StrCat(gpu_ms), FormatGpuHours(gpu_ms), "",
                 FormatUsdDecimal(invoice.total), absl::StrCat(invoice.total)});
  return out;
}

std::string RenderInvoiceJson(const Invoice& invoice) {
  std::string out = absl::StrCat(
      "{\"invoice_number\":", JsonString(invoice.invoice_number),
      ",\"tenant_id\":", JsonString(invoice.tenant_id),
      ",\"month\":", JsonString(invoice.month.Label()),
      ",\"period_start_ms\":", invoice.month.start_ms,
      ",\"period_end_ms\":", invoice.month.end_ms,
      ",\"status\":", JsonString(InvoiceStatusName(invoice.status)),
      ",\"currency\":\"USD\",\"lines\":[");
  for (size_t i = 0; i < invoice.lines.size(); ++i) {
    const InvoiceLine& l = invoice.lines[i];
    absl::StrAppend(
        &out, i == 0 ? "" : ",", "{\"job_id\":", JsonString(l.job_id),
        ",\"gpu_model\":", JsonString(l.gpu_model), ",\"shape\":", JsonString(l.shape),
        ",\"gpu_ms\":", l.gpu_ms, ",\"gpu_hours\":", JsonString(FormatGpuHours(l.gpu_ms)),
        ",\"avg_price_micros_per_gpu_hour\":", l.average_price_per_gpu_hour,
        ",\"avg_price_usd_per_gpu_hour\":",
        JsonString(FormatUsdDecimal(l.average_price_per_gpu_hour)),
        ",\"amount_micros\":", l.amount, ",\"amount_usd\":", JsonString(FormatUsdDecimal(l.amount)),
        "}");
  }
  absl::StrAppend(&out, "],\"total_micros\":", invoice.total,
                  ",\"total_usd\":", JsonString(FormatUsdDecimal(invoice.total)), "}");
  return out;
}

std::string RenderInvoiceTable(const Invoice& invoice) {
  constexpr size_t kColumns = 6;
  using Row = std::array<std::string, kColumns>;
  std::vector<Row> rows;
  rows.push_back({"JOB", "GPU MODEL", "SHAPE", "GPU-HOURS", "AVG $/GPU-H", "AMOUNT"});
  int64_t gpu_ms = 0;
  for (const InvoiceLine& l : invoice.lines) {
    gpu_ms += l.gpu_ms;
    rows.push_back({l.job_id, l.gpu_model, l.shape, FormatGpuHours(l.gpu_ms),
                    FormatUsd(l.average_price_per_gpu_hour), FormatUsd(l.amount)});
  }
  const Row total = {"TOTAL", "", "", FormatGpuHours(gpu_ms), "", FormatUsd(invoice.total)};
  std::array<size_t, kColumns> width{};
  for (const Row& r : rows) {
    for (size_t c = 0; c < kColumns; ++c) width[c] = std::max(width[c], r[c].size());
  }
  for (size_t c = 0; c < kColumns; ++c) width[c] = std::max(width[c], total[c].size());

  // Text columns left-aligned, numbers right-aligned.
  auto format_row = [&](const Row& r) {
    std::string line;
    for (size_t c = 0; c < kColumns; ++c) {
      const int w = static_cast<int>(width[c]);
      absl::StrAppend(&line, c == 0 ? "" : "  ",
                      c < 3 ? absl::StrFormat("%-*s", w, r[c]) : absl::StrFormat("%*s", w, r[c]));
    }
    line.erase(line.find_last_not_of(' ') + 1);
    return absl::StrCat(line, "\n");
  };
  size_t rule_width = 2 * (kColumns - 1);
  for (size_t w : width) rule_width += w;
  const std::string rule(rule_width, '-');

  std::string out = absl::StrCat(
      "Invoice ", invoice.invoice_number.empty() ? "(draft)" : invoice.invoice_number,
      "\nTenant:  ", invoice.tenant_id, "\nPeriod:  ", invoice.month.Label(),
      " (UTC)\nStatus:  ", InvoiceStatusName(invoice.status), "\n\n");
  out += format_row(rows[0]);
  out += rule + "\n";
  for (size_t i = 1; i < rows.size(); ++i) out += format_row(rows[i]);
  out += rule + "\n";
  out += format_row(total);
  return out;
}

}  // namespace surplus::billing
