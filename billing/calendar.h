#pragma once
// UTC civil-date arithmetic for billing months. Independent of the process's time zone
// and of the C library's time functions.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace surplus::billing {

inline constexpr int64_t kMsPerDay = 86'400'000;

/// Days from 1970-01-01 to the proleptic Gregorian date y-m-d (m 1..12, d 1..31).
/// Negative before 1970. (Howard Hinnant's days_from_civil.)
int64_t DaysFromCivil(int64_t y, int m, int d);

struct CivilDate {
  int64_t year = 1970;
  int month = 1;  ///< 1..12
  int day = 1;    ///< 1..31
};

/// Inverse of DaysFromCivil.
CivilDate CivilFromDays(int64_t days);

/// A calendar month in UTC: [start_ms, end_ms).
struct BillingMonth {
  int64_t year = 1970;
  int month = 1;         ///< 1..12
  int64_t start_ms = 0;  ///< UTC epoch ms of the first instant of the month
  int64_t end_ms = 0;    ///< UTC epoch ms of the first instant of the next month

  /// "YYYY-MM".
  std::string Label() const;
};

/// The month y-m (m 1..12; year 1..9999).
BillingMonth MakeBillingMonth(int64_t year, int month);

/// Parses "YYYY-MM" (exactly 4 + 2 digits, month 01..12). InvalidArgument otherwise.
absl::StatusOr<BillingMonth> ParseBillingMonth(absl::string_view text);

/// The month containing the instant `t_ms` (UTC epoch ms).
BillingMonth BillingMonthContaining(int64_t t_ms);

/// The month after `m`.
BillingMonth NextBillingMonth(const BillingMonth& m);

}  // namespace surplus::billing
