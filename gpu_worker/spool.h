#pragma once
// The worker's durable outbox of usage records: an append-only file of checksummed
// frames plus a small state file of what billing has acknowledged.
//
// Files in the spool folder:
//   usage.spool  "SURPSPL1" then frames [u32 length][u32 CRC32C of payload][payload],
//                little-endian; payload = EncodeUsageRecord.
//   usage.state  text: next sequence number, highest contiguously acked sequence number,
//                acked numbers above it, and a CRC32C of those lines. Replaced atomically
//                (write temp, fsync, rename, fsync folder).
// A record is durable when Append returns. It is dropped from the file only after it
// was acked and the ack was made durable, by Compact (which rewrites the file atomically).
// Sequence numbers are assigned here, from 1, and never reused, across restarts too.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "gpu_worker/usage_record.h"

namespace surplus::worker {

/// CRC32C (Castagnoli), as used by iSCSI and ext4. Crc32c("123456789") == 0xE3069283.
uint32_t Crc32c(absl::string_view data);

struct SpoolOptions {
  /// After an ack, compact once acked frames take at least this many bytes and at
  /// least half of the file.
  int64_t compact_min_acked_bytes = 1 << 20;
  /// A frame claiming a longer payload is treated as corrupt.
  uint32_t max_record_bytes = 1 << 20;
};

/// What Open found on disk.
struct SpoolRecovery {
  size_t frames = 0;            ///< valid frames read
  size_t pending = 0;           ///< of those, not yet acked
  int64_t truncated_bytes = 0;  ///< torn or corrupt tail cut off (0 when clean)
  std::string truncation_reason;
};

class UsageSpool {
 public:
  /// Opens (creating if needed) the spool in folder `dir`; the parent folder must exist.
  /// Recovers from a crash: cuts the file at the first torn or corrupt frame, drops
  /// acked records from the pending set and restores the next sequence number.
  /// Errors: DataLoss for an unreadable state file or a file that is not a spool;
  /// Internal for I/O failures (message carries the path and errno text).
  static absl::StatusOr<std::unique_ptr<UsageSpool>> Open(std::string dir,
                                                          SpoolOptions options = {});
  ~UsageSpool();
  UsageSpool(const UsageSpool&) = delete;
  UsageSpool& operator=(const UsageSpool&) = delete;

  /// Assigns the next sequence number to `record` (its seq is overwritten), appends it
  /// and fdatasyncs before returning the number. After an I/O error the spool refuses
  /// further appends (FailedPrecondition) until reopened, so a torn frame is never
  /// followed by good ones.
  absl::StatusOr<uint64_t> Append(UsageRecord record);

  /// Unacked records in sequence order, at most `max_records`.
  absl::StatusOr<std::vector<UsageRecord>> Pending(
      size_t max_records = std::numeric_limits<size_t>::max()) const;

  /// Marks `seq` acked and makes that durable. Acking an unknown or already acked
  /// number is a no-op (billing may ack twice); a number never assigned is
  /// InvalidArgument. May compact (see SpoolOptions).
  absl::Status Ack(uint64_t seq);
  /// Marks every record with seq <= up_to_seq acked, in one durable step.
  absl::Status AckThrough(uint64_t up_to_seq);

  /// Rewrites the spool file without acked records (temp file, fsync, rename, fsync
  /// folder). Safe to call at any time.
  absl::Status Compact();

  /// The number the next Append will assign.
  uint64_t next_seq() const;
  /// Every seq <= this has been acked (or was lost to corruption); 0 when none.
  uint64_t acked_through() const;
  size_t pending_count() const;
  /// Current size of usage.spool in bytes.
  int64_t file_bytes() const;
  const SpoolRecovery& recovery() const { return recovery_; }

  static constexpr absl::string_view kSpoolFileName = "usage.spool";
  static constexpr absl::string_view kStateFileName = "usage.state";

 private:
  struct Frame {
    int64_t offset = 0;  ///< of the frame header in usage.spool
    uint32_t bytes = 0;  ///< header + payload
  };
  struct State {
    uint64_t next_seq = 1;
    uint64_t acked_through = 0;
    std::set<uint64_t> acked_above;  ///< acked seqs > acked_through
  };

  UsageSpool(std::string dir, SpoolOptions options);
  absl::Status Recover();
  absl::Status WriteState(const State& state) const;
  // Applies acks of `seqs` (all pending) durably; compacts when worthwhile.
  absl::Status AckLocked(const std::vector<uint64_t>& seqs) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CompactLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<UsageRecord> ReadFrame(const Frame& frame) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  std::string SpoolPath() const;
  std::string StatePath() const;

  const std::string dir_;
  const SpoolOptions options_;
  SpoolRecovery recovery_;

  mutable absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t file_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t acked_bytes_ ABSL_GUARDED_BY(mu_) = 0;  ///< bytes of acked frames still in the file
  State state_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Frame> pending_ ABSL_GUARDED_BY(mu_);
  absl::Status broken_ ABSL_GUARDED_BY(mu_);  ///< set after an append I/O failure
};

}  // namespace surplus::worker
