// Amounts typed by people (bids, prices): parsing any text must fail cleanly or give a
// value within [0, max] that formats and parses back to itself.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "surplus/money.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the maximum the caller allows.
  constexpr surplus::Micros kMax[] = {0, 1, 1'000'000, 1000 * surplus::kMicrosPerDollar,
                                      std::numeric_limits<surplus::Micros>::max()};
  const surplus::Micros max = kMax[data[0] % (sizeof kMax / sizeof kMax[0])];
  auto v = surplus::ParseUsd({reinterpret_cast<const char*>(data) + 1, size - 1}, max);
  if (!v.ok()) return 0;
  if (*v < 0 || *v > max) std::abort();
  auto again = surplus::ParseUsd(surplus::FormatUsd(*v), max);
  if (!again.ok() || *again != *v) std::abort();
  return 0;
}
