#include "surplus/money.h"

#include <cctype>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace surplus {

Int128 DivRoundHalfEven(Int128 num, Int128 den) {
  // Work on magnitudes so that C++'s truncation toward zero is well defined.
  const bool negative = (num < 0) != (den < 0);
  Int128 n = num < 0 ? -num : num;
  Int128 d = den < 0 ? -den : den;
  Int128 q = n / d;
  const Int128 r = n % d;
  const Int128 twice = 2 * r;
  if (twice > d || (twice == d && (q % 2) == 1)) ++q;
  return negative ? -q : q;
}

std::string FormatUsd(Micros micros) {
  const bool negative = micros < 0;
  // Avoid overflow on INT64_MIN by working in unsigned.
  uint64_t mag = negative ? static_cast<uint64_t>(-(micros + 1)) + 1 : static_cast<uint64_t>(micros);
  uint64_t dollars = mag / 1'000'000;
  uint64_t frac = mag % 1'000'000;
  std::string frac_str = std::to_string(frac);
  frac_str.insert(0, 6 - frac_str.size(), '0');
  // Keep at least cents; drop trailing zeros past them.
  while (frac_str.size() > 2 && frac_str.back() == '0') frac_str.pop_back();
  return absl::StrCat(negative ? "-$" : "$", dollars, ".", frac_str);
}

absl::StatusOr<Micros> ParseUsd(absl::string_view text, Micros max_micros) {
  if (!text.empty() && text.front() == '$') text.remove_prefix(1);
  if (text.empty()) return absl::InvalidArgumentError("empty amount");
  uint64_t whole = 0;
  uint64_t frac = 0;
  int frac_digits = 0;
  bool seen_dot = false;
  bool seen_digit = false;
  for (char c : text) {
    if (c == '.') {
      if (seen_dot) return absl::InvalidArgumentError(absl::StrCat("bad amount '", text, "'"));
      seen_dot = true;
      continue;
    }
    if (!std::isdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(absl::StrCat("bad amount '", text, "': use digits like 2.10"));
    }
    seen_digit = true;
    if (seen_dot) {
      if (++frac_digits > 6) {
        return absl::InvalidArgumentError(
            absl::StrCat("amount '", text, "' has more than 6 decimals (micro-dollars)"));
      }
      frac = frac * 10 + static_cast<uint64_t>(c - '0');
    } else {
      whole = whole * 10 + static_cast<uint64_t>(c - '0');
      if (whole > static_cast<uint64_t>(max_micros / kMicrosPerDollar) + 1) {
        return absl::InvalidArgumentError(absl::StrCat("amount '", text, "' is too large"));
      }
    }
  }
  if (!seen_digit) return absl::InvalidArgumentError(absl::StrCat("bad amount '", text, "'"));
  for (int i = frac_digits; i < 6; ++i) frac *= 10;
  const uint64_t total = whole * 1'000'000 + frac;
  if (total > static_cast<uint64_t>(max_micros)) {
    return absl::InvalidArgumentError(
        absl::StrCat("amount '", text, "' is above the maximum ", FormatUsd(max_micros)));
  }
  return static_cast<Micros>(total);
}

}  // namespace surplus
