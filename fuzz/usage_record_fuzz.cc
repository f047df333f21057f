// Usage records come back from disk after crashes: decoding any bytes must fail cleanly or
// give a record that encodes and decodes to itself.

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "gpu_worker/usage_record.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using surplus::worker::DecodeUsageRecord;
  using surplus::worker::EncodeUsageRecord;
  auto record = DecodeUsageRecord({reinterpret_cast<const char*>(data), size});
  if (!record.ok()) return 0;
  auto again = DecodeUsageRecord(EncodeUsageRecord(*record));
  if (!again.ok() || *again != *record) std::abort();
  return 0;
}
