#include "gpu_worker/usage_record.h"

#include <tuple>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace surplus::worker {
namespace {

// Version 1 lacks the attempt; version 2 appends it. Encoding always writes the newest.
constexpr uint8_t kVersion1 = 1;
constexpr uint8_t kVersion2 = 2;
constexpr uint8_t kFlagFinal = 0x01;

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void PutString(std::string* out, absl::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s.data(), s.size());
}

// Reads from the front of `in`; every getter returns false when `in` is too short.
class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  bool U8(uint8_t* v) {
    if (in_.empty()) return false;
    *v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return true;
  }
  bool U64(uint64_t* v) { return Fixed(8, v); }
  bool I32(int32_t* v) {
    uint64_t u = 0;
    if (!Fixed(4, &u)) return false;
    *v = static_cast<int32_t>(static_cast<uint32_t>(u));
    return true;
  }
  bool I64(int64_t* v) {
    uint64_t u = 0;
    if (!Fixed(8, &u)) return false;
    *v = static_cast<int64_t>(u);
    return true;
  }
  bool String(std::string* s) {
    uint64_t len = 0;
    if (!Fixed(4, &len) || len > in_.size()) return false;
    s->assign(in_.data(), len);
    in_.remove_prefix(len);
    return true;
  }
  bool empty() const { return in_.empty(); }

 private:
  bool Fixed(int bytes, uint64_t* v) {
    if (in_.size() < static_cast<size_t>(bytes)) return false;
    uint64_t out = 0;
    for (int i = 0; i < bytes; ++i) {
      out |= static_cast<uint64_t>(static_cast<uint8_t>(in_[i])) << (8 * i);
    }
    in_.remove_prefix(bytes);
    *v = out;
    return true;
  }
  absl::string_view in_;
};

}  // namespace

bool operator==(const UsageRecord& a, const UsageRecord& b) {
  return std::tie(a.worker_id, a.seq, a.job_id, a.attempt, a.tenant_id, a.gpu_model,
                  a.slice_profile, a.gpu_indices, a.start_ms, a.end_ms, a.gpu_ms, a.is_final) ==
         std::tie(b.worker_id, b.seq, b.job_id, b.attempt, b.tenant_id, b.gpu_model,
                  b.slice_profile, b.gpu_indices, b.start_ms, b.end_ms, b.gpu_ms, b.is_final);
}

std::string EncodeUsageRecord(const UsageRecord& r) {
  std::string out;
  out.reserve(68 + r.worker_id.size() + r.job_id.size() + r.tenant_id.size() +
              r.gpu_model.size() + r.slice_profile.size() + r.gpu_indices.size());
  out.push_back(static_cast<char>(kVersion2));
  PutU64(&out, r.seq);
  PutU64(&out, static_cast<uint64_t>(r.start_ms));
  PutU64(&out, static_cast<uint64_t>(r.end_ms));
  PutU64(&out, static_cast<uint64_t>(r.gpu_ms));
  out.push_back(static_cast<char>(r.is_final ? kFlagFinal : 0));
  PutString(&out, r.worker_id);
  PutString(&out, r.job_id);
  PutString(&out, r.tenant_id);
  PutString(&out, r.gpu_model);
  PutString(&out, r.slice_profile);
  PutString(&out, r.gpu_indices);
  PutU32(&out, static_cast<uint32_t>(r.attempt));
  return out;
}

absl::StatusOr<UsageRecord> DecodeUsageRecord(absl::string_view bytes) {
  Reader in(bytes);
  UsageRecord r;
  uint8_t version = 0;
  uint8_t flags = 0;
  if (!in.U8(&version)) return absl::DataLossError("empty usage record");
  if (version != kVersion1 && version != kVersion2) {
    return absl::DataLossError(absl::StrCat("unknown usage record version ", version));
  }
  if (!in.U64(&r.seq) || !in.I64(&r.start_ms) || !in.I64(&r.end_ms) || !in.I64(&r.gpu_ms) ||
      !in.U8(&flags) || !in.String(&r.worker_id) || !in.String(&r.job_id) ||
      !in.String(&r.tenant_id) || !in.String(&r.gpu_model) || !in.String(&r.slice_profile) ||
      !in.String(&r.gpu_indices)) {
    return absl::DataLossError("truncated usage record");
  }
  if (version >= kVersion2 && !in.I32(&r.attempt)) {
    return absl::DataLossError("truncated usage record");
  }
  if (!in.empty()) return absl::DataLossError("trailing bytes after usage record");
  r.is_final = (flags & kFlagFinal) != 0;
  return r;
}

}  // namespace surplus::worker
