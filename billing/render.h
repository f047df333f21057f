#pragma once
// Invoice renderings: CSV (RFC 4180), JSON and a fixed-width text table. Amounts appear
// both as exact integer micro-dollars and as decimal USD text.

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "billing/invoice.h"

namespace surplus::billing {

/// GPU-hours with three decimals, "12.346": gpu_ms / 3,600,000 rounded half to even.
/// For display only; amounts never use this rounded figure.
std::string FormatGpuHours(int64_t gpu_ms);

/// "2.10" / "-0.000001": USD with at least two decimals and no currency sign.
std::string FormatUsdDecimal(Micros micros);

/// One RFC 4180 field: quoted (with inner quotes doubled) when it holds a comma, a quote,
/// CR or LF; verbatim otherwise.
std::string CsvField(absl::string_view text);

/// A JSON string literal, quotes included. Escapes '"', '\\' and control characters;
/// passes other bytes (UTF-8) through.
std::string JsonString(absl::string_view text);

/// CSV with a header row, one row per line ("line") and a final "total" row. Rows end in
/// CRLF. Columns: invoice_number, tenant_id, month, status, row, job_id, gpu_model, shape,
/// gpu_ms, gpu_hours, avg_price_usd_per_gpu_hour, amount_usd, amount_micros.
std::string RenderInvoiceCsv(const Invoice& invoice);

/// One JSON object, compact, keys in a fixed order. Money fields: "*_micros" integers and
/// "*_usd" decimal strings.
std::string RenderInvoiceJson(const Invoice& invoice);

/// A human-readable table for terminals and emails.
std::string RenderInvoiceTable(const Invoice& invoice);

}  // namespace surplus::billing
