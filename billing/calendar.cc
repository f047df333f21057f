#include "billing/calendar.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace surplus::billing {

// Algorithms from Howard Hinnant, "chrono-Compatible Low-Level Date Algorithms": eras of
// 400 years (146097 days), years starting in March so the leap day ends the year.
int64_t DaysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;                                       // [0, 399]
  const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;     // [0, 365]
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;               // [0, 146096]
  return era * 146097 + doe - 719468;
}

CivilDate CivilFromDays(int64_t days) {
  days += 719468;
  const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const int64_t doe = days - era * 146097;                                    // [0, 146096]
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  // [0, 399]
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                // [0, 365]
  const int64_t mp = (5 * doy + 2) / 153;                                     // [0, 11]
  CivilDate out;
  out.day = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  out.month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  out.year = yoe + era * 400 + (out.month <= 2 ? 1 : 0);
  return out;
}

std::string BillingMonth::Label() const { return absl::StrFormat("%04d-%02d", year, month); }

BillingMonth MakeBillingMonth(int64_t year, int month) {
  BillingMonth m;
  m.year = year;
  m.month = month;
  m.start_ms = DaysFromCivil(year, month, 1) * kMsPerDay;
  const int64_t next_year = month == 12 ? year + 1 : year;
  const int next_month = month == 12 ? 1 : month + 1;
  m.end_ms = DaysFromCivil(next_year, next_month, 1) * kMsPerDay;
  return m;
}

absl::StatusOr<BillingMonth> ParseBillingMonth(absl::string_view text) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("bad month '", text, "': use YYYY-MM, e.g. 2025-03"));
  };
  if (text.size() != 7 || text[4] != '-') return bad();
  int64_t year = 0;
  int month = 0;
  for (size_t i = 0; i < 7; ++i) {
    if (i == 4) continue;
    if (!absl::ascii_isdigit(static_cast<unsigned char>(text[i]))) return bad();
    const int digit = text[i] - '0';
    if (i < 4) {
      year = year * 10 + digit;
    } else {
      month = month * 10 + digit;
    }
  }
  if (year < 1 || month < 1 || month > 12) return bad();
  return MakeBillingMonth(year, month);
}

BillingMonth BillingMonthContaining(int64_t t_ms) {
  // Floor division so instants before 1970 land in the right day.
  int64_t days = t_ms / kMsPerDay;
  if (t_ms % kMsPerDay < 0) --days;
  const CivilDate date = CivilFromDays(days);
  return MakeBillingMonth(date.year, date.month);
}

BillingMonth NextBillingMonth(const BillingMonth& m) {
  return m.month == 12 ? MakeBillingMonth(m.year + 1, 1) : MakeBillingMonth(m.year, m.month + 1);
}

}  // namespace surplus::billing
