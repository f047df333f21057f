// The usage spool after a crash: whatever is on disk, opening it must either refuse with
// an error or recover a spool that keeps working: it accepts a new record, and the record
// is there after reopening.
//
// The input is read as a spool file built from it: byte 0 holds flags (bit 0: start with
// the file magic; bit 1: flip one byte of the built file, at the offset in byte 1), then
// chunks of [1-byte length][payload], each written as a frame with a correct CRC so that
// the fuzzer reaches the record decoder and the recovery logic behind the checksums.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gpu_worker/spool.h"

namespace {

using surplus::worker::Crc32c;
using surplus::worker::UsageRecord;
using surplus::worker::UsageSpool;

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

const std::string& Dir() {
  static const std::string* dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "spool_fuzz.XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    return new std::string(tmpl + "/spool");
  }();
  return *dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t flags = data[0];
  std::string file = (flags & 1) ? "SURPSPL1" : "";
  for (size_t i = 2; i < size;) {
    const size_t n = std::min<size_t>(data[i], size - i - 1);
    const std::string payload(reinterpret_cast<const char*>(data) + i + 1, n);
    PutU32(&file, static_cast<uint32_t>(payload.size()));
    PutU32(&file, Crc32c(payload));
    file += payload;
    i += 1 + n;
  }
  if ((flags & 2) && !file.empty()) file[data[1] % file.size()] ^= 0x5a;

  const std::string& dir = Dir();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/usage.spool", std::ios::binary) << file;

  auto spool = UsageSpool::Open(dir);
  if (!spool.ok()) return 0;  // refused: not a spool, or damaged beyond recovery
  if (!(*spool)->Pending().ok()) std::abort();
  UsageRecord r;
  r.worker_id = "node-1";
  r.job_id = "job-1";
  r.start_ms = 1;
  r.end_ms = 2;
  auto seq = (*spool)->Append(r);
  if (!seq.ok()) std::abort();
  spool->reset();
  auto again = UsageSpool::Open(dir);
  if (!again.ok()) std::abort();
  auto pending = (*again)->Pending();
  if (!pending.ok() || pending->empty() || pending->back().seq != *seq || pending->back().job_id != "job-1") {
    std::abort();
  }
  return 0;
}
