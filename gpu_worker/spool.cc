#include "gpu_worker/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <functional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace surplus::worker {
namespace {

constexpr absl::string_view kMagic = "SURPSPL1";
// Sequence numbers count records from 1; no worker gets near this many.
constexpr uint64_t kMaxSeq = uint64_t{1} << 62;
constexpr size_t kFrameHeaderBytes = 8;  // u32 length + u32 crc
constexpr absl::string_view kStateHeader = "surplus-usage-spool-state 1";

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}

absl::Status ErrnoError(absl::string_view what, const std::string& path, int err) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(err)));
}

void PutU32(char* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
uint32_t GetU32(const char* in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  return v;
}

// Writes all of `data` at the current offset (fd may be O_APPEND), retrying short writes.
absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// Reads exactly `n` bytes at `offset`. Returns the number read (< n only at end of file).
absl::StatusOr<size_t> PreadFull(int fd, char* buf, size_t n, int64_t offset,
                                 const std::string& path) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, buf + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read", path, errno);
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

absl::Status FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open folder", dir, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync folder", dir, err);
  return absl::OkStatus();
}

// Replaces `path` with `contents` atomically and durably: temp file, fsync, rename,
// fsync of the folder.
// Replaces `path` with what `write` writes to a temporary file (fsync, rename, fsync the
// folder), so that a crash leaves either the old file or the new one.
absl::Status ReplaceFileAtomically(const std::string& dir, const std::string& path,
                                   const std::function<absl::Status(int fd, const std::string& tmp)>& write) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("create", tmp, errno);
  absl::Status s = write(fd, tmp);
  if (s.ok() && ::fsync(fd) != 0) s = ErrnoError("fsync", tmp, errno);
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = ErrnoError("rename", tmp, errno);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return FsyncDir(dir);
}

absl::Status WriteFileAtomically(const std::string& dir, const std::string& path, absl::string_view contents) {
  return ReplaceFileAtomically(dir, path, [&](int fd, const std::string& tmp) { return WriteAll(fd, contents, tmp); });
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(path);
    return ErrnoError("open", path, errno);
  }
  std::string out;
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return ErrnoError("read", path, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace

uint32_t Crc32c(absl::string_view data) {
  static const std::array<uint32_t, 256> kTable = MakeCrcTable();
  uint32_t c = 0xFFFFFFFFu;
  for (char ch : data) c = kTable[(c ^ static_cast<uint8_t>(ch)) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

UsageSpool::UsageSpool(std::string dir, SpoolOptions options)
    : dir_(std::move(dir)), options_(options) {}

UsageSpool::~UsageSpool() {
  absl::MutexLock lock(&mu_);
  if (fd_ >= 0) ::close(fd_);
}

std::string UsageSpool::SpoolPath() const { return absl::StrCat(dir_, "/", kSpoolFileName); }
std::string UsageSpool::StatePath() const { return absl::StrCat(dir_, "/", kStateFileName); }

absl::StatusOr<std::unique_ptr<UsageSpool>> UsageSpool::Open(std::string dir,
                                                              SpoolOptions options) {
  if (dir.empty()) return absl::InvalidArgumentError("empty spool folder");
  if (::mkdir(dir.c_str(), 0755) == 0) {
    // Make the new folder's entry durable too.
    const size_t slash = dir.find_last_of('/');
    const std::string parent =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : dir.substr(0, slash));
    if (absl::Status s = FsyncDir(parent); !s.ok()) return s;
  } else if (errno != EEXIST) {
    return ErrnoError("create spool folder", dir, errno);
  }
  std::unique_ptr<UsageSpool> spool(new UsageSpool(std::move(dir), options));
  if (absl::Status s = spool->Recover(); !s.ok()) return s;
  return spool;
}

absl::Status UsageSpool::Recover() {
  absl::MutexLock lock(&mu_);
  // A temp file left by a crash mid-compaction or mid-state-write is garbage: the
  // renamed originals are authoritative.
  ::unlink(absl::StrCat(SpoolPath(), ".tmp").c_str());
  ::unlink(absl::StrCat(StatePath(), ".tmp").c_str());

  // State file.
  absl::StatusOr<std::string> state_text = ReadSmallFile(StatePath());
  if (state_text.ok()) {
    const size_t crc_at = state_text->rfind("crc ");
    uint32_t want_crc = 0;
    std::vector<absl::string_view> lines;
    bool ok = crc_at != std::string::npos &&
              absl::SimpleHexAtoi(absl::StripSuffix(
                                      absl::string_view(*state_text).substr(crc_at + 4), "\n"),
                                  &want_crc) &&
              Crc32c(absl::string_view(*state_text).substr(0, crc_at)) == want_crc;
    if (ok) {
      lines = absl::StrSplit(absl::string_view(*state_text).substr(0, crc_at), '\n',
                             absl::SkipEmpty());
      ok = lines.size() == 4 && lines[0] == kStateHeader &&
           absl::ConsumePrefix(&lines[1], "next_seq ") &&
           absl::SimpleAtoi(lines[1], &state_.next_seq) &&
           absl::ConsumePrefix(&lines[2], "acked_through ") &&
           absl::SimpleAtoi(lines[2], &state_.acked_through) &&
           absl::ConsumePrefix(&lines[3], "acked");
      if (ok) {
        for (absl::string_view word : absl::StrSplit(lines[3], ' ', absl::SkipEmpty())) {
          uint64_t seq = 0;
          if (!absl::SimpleAtoi(word, &seq)) ok = false;
          state_.acked_above.insert(seq);
        }
      }
    }
    ok = ok && state_.next_seq < kMaxSeq && state_.acked_through < state_.next_seq;
    if (!ok) {
      // Guessing here could reuse sequence numbers (billing would drop the new records
      // as duplicates), so refuse and let an operator look.
      return absl::DataLossError(absl::StrCat("unreadable spool state file ", StatePath()));
    }
  } else if (!absl::IsNotFound(state_text.status())) {
    return state_text.status();
  }

  // Spool file: create it atomically with its header if missing.
  const std::string path = SpoolPath();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return ErrnoError("stat", path, errno);
    if (absl::Status s = WriteFileAtomically(dir_, path, kMagic); !s.ok()) return s;
  }
  fd_ = ::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) return ErrnoError("open", path, errno);

  char magic[8];
  absl::StatusOr<size_t> got = PreadFull(fd_, magic, sizeof magic, 0, path);
  if (!got.ok()) return got.status();
  if (*got != kMagic.size() || absl::string_view(magic, sizeof magic) != kMagic) {
    return absl::DataLossError(absl::StrCat(path, " is not a usage spool"));
  }

  // Scan frames until the end or the first bad one.
  int64_t offset = static_cast<int64_t>(kMagic.size());
  uint64_t max_seq = 0;
  std::string payload;
  while (true) {
    char header[kFrameHeaderBytes];
    got = PreadFull(fd_, header, sizeof header, offset, path);
    if (!got.ok()) return got.status();
    if (*got == 0) break;  // clean end
    if (*got < sizeof header) {
      recovery_.truncation_reason = "torn frame header";
      break;
    }
    const uint32_t len = GetU32(header);
    const uint32_t crc = GetU32(header + 4);
    if (len > options_.max_record_bytes) {
      recovery_.truncation_reason = absl::StrCat("frame length ", len, " too large");
      break;
    }
    payload.resize(len);
    got = PreadFull(fd_, payload.data(), len, offset + static_cast<int64_t>(sizeof header), path);
    if (!got.ok()) return got.status();
    if (*got < len) {
      recovery_.truncation_reason = "torn frame payload";
      break;
    }
    if (Crc32c(payload) != crc) {
      recovery_.truncation_reason = "checksum mismatch";
      break;
    }
    absl::StatusOr<UsageRecord> record = DecodeUsageRecord(payload);
    if (!record.ok()) {
      recovery_.truncation_reason = std::string(record.status().message());
      break;
    }
    const uint64_t seq = record->seq;
    // Append numbers frames 1, 2, 3, ... in file order and compaction keeps that order, so
    // a readable frame out of that order was not written by a spool: refuse rather than
    // guess which records are real (dropping them loses usage, keeping them may bill twice).
    if (seq == 0 || seq >= kMaxSeq || seq <= max_seq) {
      return absl::DataLossError(absl::StrCat(path, ": frame at offset ", offset, " has sequence number ", seq,
                                              max_seq > 0 ? absl::StrCat(" after ", max_seq) : std::string(),
                                              "; the spool was not written by this program"));
    }
    const Frame frame{offset, static_cast<uint32_t>(sizeof header + len)};
    offset += frame.bytes;
    ++recovery_.frames;
    max_seq = seq;
    if (seq <= state_.acked_through || state_.acked_above.count(seq) > 0 ||
        pending_.count(seq) > 0) {
      acked_bytes_ += frame.bytes;
    } else {
      pending_.emplace(seq, frame);
    }
  }
  if (::fstat(fd_, &st) != 0) return ErrnoError("stat", path, errno);
  if (st.st_size > offset) {
    recovery_.truncated_bytes = st.st_size - offset;
    if (::ftruncate(fd_, offset) != 0) return ErrnoError("truncate", path, errno);
    if (::fdatasync(fd_) != 0) return ErrnoError("fdatasync", path, errno);
  }
  file_bytes_ = offset;
  recovery_.pending = pending_.size();

  state_.next_seq = std::max({state_.next_seq, max_seq + 1, state_.acked_through + 1});
  // Re-derive the watermark: everything below the oldest pending record is done.
  state_.acked_through = pending_.empty() ? state_.next_seq - 1 : pending_.begin()->first - 1;
  state_.acked_above.erase(state_.acked_above.begin(),
                           state_.acked_above.upper_bound(state_.acked_through));
  return absl::OkStatus();
}

absl::Status UsageSpool::WriteState(const State& state) const {
  std::string text = absl::StrCat(kStateHeader, "\nnext_seq ", state.next_seq,
                                  "\nacked_through ", state.acked_through, "\nacked");
  for (uint64_t seq : state.acked_above) absl::StrAppend(&text, " ", seq);
  text += "\n";
  absl::StrAppendFormat(&text, "crc %08x\n", Crc32c(text));
  return WriteFileAtomically(dir_, StatePath(), text);
}

absl::StatusOr<uint64_t> UsageSpool::Append(UsageRecord record) {
  absl::MutexLock lock(&mu_);
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("spool disabled after an I/O error (reopen it): ", broken_.message()));
  }
  record.seq = state_.next_seq;
  const std::string payload = EncodeUsageRecord(record);
  if (payload.size() > options_.max_record_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("usage record of ", payload.size(), " bytes is too large"));
  }
  std::string frame(kFrameHeaderBytes, '\0');
  PutU32(frame.data(), static_cast<uint32_t>(payload.size()));
  PutU32(frame.data() + 4, Crc32c(payload));
  frame += payload;

  const std::string path = SpoolPath();
  absl::Status s = WriteAll(fd_, frame, path);
  if (s.ok() && ::fdatasync(fd_) != 0) s = ErrnoError("fdatasync", path, errno);
  if (!s.ok()) {
    // Cut the partial frame so that later frames are not hidden behind it on recovery.
    // After a failed fdatasync the page cache state is unknown: stop appending either way.
    if (::ftruncate(fd_, file_bytes_) == 0) ::fdatasync(fd_);
    broken_ = s;
    return s;
  }
  pending_.emplace(record.seq, Frame{file_bytes_, static_cast<uint32_t>(frame.size())});
  file_bytes_ += static_cast<int64_t>(frame.size());
  return state_.next_seq++;
}

absl::StatusOr<UsageRecord> UsageSpool::ReadFrame(const Frame& frame) const {
  const std::string path = SpoolPath();
  std::string buf(frame.bytes, '\0');
  absl::StatusOr<size_t> got = PreadFull(fd_, buf.data(), buf.size(), frame.offset, path);
  if (!got.ok()) return got.status();
  if (*got != buf.size() || GetU32(buf.data()) != frame.bytes - kFrameHeaderBytes) {
    return absl::DataLossError(absl::StrCat(path, ": frame at ", frame.offset, " changed"));
  }
  const absl::string_view payload = absl::string_view(buf).substr(kFrameHeaderBytes);
  if (Crc32c(payload) != GetU32(buf.data() + 4)) {
    return absl::DataLossError(absl::StrCat(path, ": checksum mismatch at ", frame.offset));
  }
  return DecodeUsageRecord(payload);
}

absl::StatusOr<std::vector<UsageRecord>> UsageSpool::Pending(size_t max_records) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<UsageRecord> out;
  for (const auto& [seq, frame] : pending_) {
    if (out.size() >= max_records) break;
    absl::StatusOr<UsageRecord> record = ReadFrame(frame);
    if (!record.ok()) return record.status();
    out.push_back(*std::move(record));
  }
  return out;
}

absl::Status UsageSpool::Ack(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  if (seq == 0 || seq >= state_.next_seq) {
    return absl::InvalidArgumentError(absl::StrCat("ack of unassigned sequence number ", seq));
  }
  if (pending_.count(seq) == 0) return absl::OkStatus();
  return AckLocked({seq});
}

absl::Status UsageSpool::AckThrough(uint64_t up_to_seq) {
  absl::MutexLock lock(&mu_);
  if (up_to_seq >= state_.next_seq) {
    return absl::InvalidArgumentError(
        absl::StrCat("ack of unassigned sequence number ", up_to_seq));
  }
  std::vector<uint64_t> seqs;
  for (auto it = pending_.begin(); it != pending_.end() && it->first <= up_to_seq; ++it) {
    seqs.push_back(it->first);
  }
  if (seqs.empty()) return absl::OkStatus();
  return AckLocked(seqs);
}

absl::Status UsageSpool::AckLocked(const std::vector<uint64_t>& seqs) {
  // Make the new state durable first; only then forget the records in memory.
  State next = state_;
  uint64_t oldest_left = 0;  // 0: none pending after the ack
  std::set<uint64_t> acking(seqs.begin(), seqs.end());
  for (const auto& [seq, frame] : pending_) {
    if (acking.count(seq) == 0) {
      oldest_left = seq;
      break;
    }
  }
  next.acked_through = oldest_left == 0 ? next.next_seq - 1 : oldest_left - 1;
  for (uint64_t seq : seqs) {
    if (seq > next.acked_through) next.acked_above.insert(seq);
  }
  next.acked_above.erase(next.acked_above.begin(),
                         next.acked_above.upper_bound(next.acked_through));
  if (absl::Status s = WriteState(next); !s.ok()) return s;

  state_ = std::move(next);
  for (uint64_t seq : seqs) {
    auto it = pending_.find(seq);
    acked_bytes_ += it->second.bytes;
    pending_.erase(it);
  }
  if (acked_bytes_ >= options_.compact_min_acked_bytes && 2 * acked_bytes_ >= file_bytes_) {
    return CompactLocked();
  }
  return absl::OkStatus();
}

absl::Status UsageSpool::Compact() {
  absl::MutexLock lock(&mu_);
  return CompactLocked();
}

absl::Status UsageSpool::CompactLocked() {
  if (acked_bytes_ == 0) return absl::OkStatus();
  const std::string path = SpoolPath();
  std::map<uint64_t, Frame> moved;
  int64_t written = 0;
  // The pending frames are copied through a bounded buffer: a backlog built up while
  // billing was away can be far larger than the memory a worker should take for it.
  constexpr size_t kChunk = 1 << 20;
  auto copy = [&](int out, const std::string& tmp) -> absl::Status {
    std::string buf(kMagic);
    for (const auto& [seq, frame] : pending_) {
      const size_t at = buf.size();
      buf.resize(at + frame.bytes);
      absl::StatusOr<size_t> got = PreadFull(fd_, buf.data() + at, frame.bytes, frame.offset, path);
      if (!got.ok()) return got.status();
      if (*got != frame.bytes) return absl::DataLossError(absl::StrCat(path, " shrank"));
      moved.emplace(seq, Frame{written + static_cast<int64_t>(at), frame.bytes});
      if (buf.size() >= kChunk) {
        if (absl::Status s = WriteAll(out, buf, tmp); !s.ok()) return s;
        written += static_cast<int64_t>(buf.size());
        buf.clear();
      }
    }
    written += static_cast<int64_t>(buf.size());
    return WriteAll(out, buf, tmp);
  };
  // The state file already records every ack (AckLocked writes it first), including
  // next_seq, so dropping acked frames loses nothing needed to restore the numbering.
  if (absl::Status s = ReplaceFileAtomically(dir_, path, copy); !s.ok()) return s;
  const int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  if (fd < 0) {
    broken_ = ErrnoError("reopen", path, errno);
    return broken_;
  }
  ::close(fd_);
  fd_ = fd;
  pending_ = std::move(moved);
  file_bytes_ = written;
  acked_bytes_ = 0;
  return absl::OkStatus();
}

uint64_t UsageSpool::next_seq() const {
  absl::ReaderMutexLock lock(&mu_);
  return state_.next_seq;
}

uint64_t UsageSpool::acked_through() const {
  absl::ReaderMutexLock lock(&mu_);
  return state_.acked_through;
}

size_t UsageSpool::pending_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return pending_.size();
}

int64_t UsageSpool::file_bytes() const {
  absl::ReaderMutexLock lock(&mu_);
  return file_bytes_;
}

}  // namespace surplus::worker
