// UsageSpool against real files: durability across reopen, crash recovery, acks and
// compaction.

#include "gpu_worker/spool.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace surplus::worker {
namespace {

class SpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "spool_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/spool";
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  std::unique_ptr<UsageSpool> OpenSpool(SpoolOptions options = {}) {
    absl::StatusOr<std::unique_ptr<UsageSpool>> spool = UsageSpool::Open(dir_, options);
    EXPECT_TRUE(spool.ok()) << spool.status();
    return spool.ok() ? *std::move(spool) : nullptr;
  }
  std::string SpoolFile() const { return dir_ + "/usage.spool"; }
  int64_t FileSize() const {
    return static_cast<int64_t>(std::filesystem::file_size(SpoolFile()));
  }

  static UsageRecord Record(const std::string& job, int64_t start_ms) {
    UsageRecord r;
    r.worker_id = "node-7";
    r.job_id = job;
    r.tenant_id = "acme";
    r.gpu_model = "H100-80GB";
    r.slice_profile = "3g.40gb";
    r.gpu_indices = "0";
    r.start_ms = start_ms;
    r.end_ms = start_ms + 5000;
    r.gpu_ms = 5000 * 3 / 7;
    return r;
  }

  static std::vector<uint64_t> Seqs(const std::vector<UsageRecord>& records) {
    std::vector<uint64_t> out;
    for (const UsageRecord& r : records) out.push_back(r.seq);
    return out;
  }

  std::string root_;
  std::string dir_;
};

TEST(Crc32c, KnownVector) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
}

TEST(UsageRecordCodec, RoundTripsAndRejectsTruncation) {
  UsageRecord r;
  r.worker_id = "w";
  r.seq = 1ull << 40;
  r.job_id = "job with spaces";
  r.tenant_id = std::string("t\0x", 3);
  r.gpu_model = "H200";
  r.slice_profile = "7g.80gb";
  r.gpu_indices = "0,1,2,3";
  r.start_ms = -5;
  r.end_ms = 1'700'000'000'000;
  r.gpu_ms = 123;
  r.is_final = true;
  const std::string bytes = EncodeUsageRecord(r);
  absl::StatusOr<UsageRecord> back = DecodeUsageRecord(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, r);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_FALSE(DecodeUsageRecord(bytes.substr(0, cut)).ok()) << cut;
  }
  EXPECT_FALSE(DecodeUsageRecord(bytes + "x").ok());
}

TEST_F(SpoolTest, AppendAndReopen) {
  {
    auto spool = OpenSpool();
    ASSERT_NE(spool, nullptr);
    EXPECT_EQ(spool->next_seq(), 1u);
    for (int i = 0; i < 3; ++i) {
      absl::StatusOr<uint64_t> seq = spool->Append(Record("j1", 1000 * i));
      ASSERT_TRUE(seq.ok()) << seq.status();
      EXPECT_EQ(*seq, static_cast<uint64_t>(i + 1));
    }
  }
  auto spool = OpenSpool();
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(spool->recovery().frames, 3u);
  EXPECT_EQ(spool->recovery().truncated_bytes, 0);
  absl::StatusOr<std::vector<UsageRecord>> pending = spool->Pending();
  ASSERT_TRUE(pending.ok()) << pending.status();
  EXPECT_EQ(Seqs(*pending), (std::vector<uint64_t>{1, 2, 3}));
  UsageRecord want = Record("j1", 2000);
  want.seq = 3;
  EXPECT_EQ((*pending)[2], want);
  EXPECT_EQ(spool->next_seq(), 4u);
  // Pending honours its limit.
  EXPECT_EQ(spool->Pending(2)->size(), 2u);
}

TEST_F(SpoolTest, RecoversPrefixOfTornOrCorruptFile) {
  // Three frames; then damage the file in different ways. Frame bytes: 8 header + payload.
  struct Case {
    const char* name;
    int64_t cut_from_end;   // truncate this many bytes off the end (0: none)
    int64_t flip_at;        // XOR a byte at this offset from the end (0: none)
    std::vector<uint64_t> want;
  };
  const Case cases[] = {
      {"clean", 0, 0, {1, 2, 3}},
      // Cut mid-payload of the last frame: frames 1 and 2 survive.
      {"torn payload", 3, 0, {1, 2}},
      // Leave only 5 bytes of the last frame: a torn header.
      {"torn header", -5, 0, {1, 2}},
      // A flipped payload byte in the last frame fails its checksum.
      {"corrupt byte", 0, 10, {1, 2}},
  };
  for (const Case& c : cases) {
    std::filesystem::remove_all(dir_);
    int64_t last_frame_start = 0;
    {
      auto spool = OpenSpool();
      ASSERT_NE(spool, nullptr);
      ASSERT_TRUE(spool->Append(Record("a", 1)).ok());
      ASSERT_TRUE(spool->Append(Record("b", 2)).ok());
      last_frame_start = spool->file_bytes();
      ASSERT_TRUE(spool->Append(Record("c", 3)).ok());
    }
    const int64_t size = FileSize();
    if (c.cut_from_end > 0) std::filesystem::resize_file(SpoolFile(), size - c.cut_from_end);
    if (c.cut_from_end < 0) std::filesystem::resize_file(SpoolFile(), last_frame_start - c.cut_from_end);
    if (c.flip_at > 0) {
      const int fd = ::open(SpoolFile().c_str(), O_RDWR);
      ASSERT_GE(fd, 0);
      char byte = 0;
      ASSERT_EQ(::pread(fd, &byte, 1, size - c.flip_at), 1);
      byte ^= 0x5A;
      ASSERT_EQ(::pwrite(fd, &byte, 1, size - c.flip_at), 1);
      ::close(fd);
    }
    auto spool = OpenSpool();
    ASSERT_NE(spool, nullptr) << c.name;
    EXPECT_EQ(Seqs(*spool->Pending()), c.want) << c.name;
    EXPECT_EQ(spool->recovery().truncated_bytes > 0, c.want.size() < 3) << c.name;
    // The damaged tail is gone, so new frames land after the good prefix and survive.
    absl::StatusOr<uint64_t> next = spool->Append(Record("d", 4));
    ASSERT_TRUE(next.ok()) << c.name;
    EXPECT_EQ(*next, c.want.back() + 1) << c.name;
    spool.reset();
    auto again = OpenSpool();
    ASSERT_NE(again, nullptr);
    EXPECT_EQ(again->recovery().truncated_bytes, 0) << c.name;
    EXPECT_EQ(again->pending_count(), c.want.size() + 1) << c.name;
  }
}

TEST_F(SpoolTest, RefusesReadableFramesOutOfSequence) {
  // Frames with good checksums whose sequence numbers no spool writes (found by
  // fuzz_spool: a frame numbered 2^64-1 made the next append reuse number 1).
  auto frame = [](uint64_t seq) {
    UsageRecord r = Record("x", 1);
    r.seq = seq;
    const std::string payload = EncodeUsageRecord(r);
    std::string out(8, '\0');
    for (int i = 0; i < 4; ++i) {
      out[i] = static_cast<char>((payload.size() >> (8 * i)) & 0xff);
      out[4 + i] = static_cast<char>((Crc32c(payload) >> (8 * i)) & 0xff);
    }
    return out + payload;
  };
  const std::vector<std::vector<uint64_t>> cases = {
      {1, std::numeric_limits<uint64_t>::max()}, {0}, {2, 1}, {3, 3}, {uint64_t{1} << 62}};
  for (const auto& seqs : cases) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::string file = "SURPSPL1";
    for (uint64_t seq : seqs) file += frame(seq);
    std::ofstream(SpoolFile(), std::ios::binary) << file;
    absl::StatusOr<std::unique_ptr<UsageSpool>> spool = UsageSpool::Open(dir_);
    ASSERT_FALSE(spool.ok()) << seqs.back();
    EXPECT_EQ(spool.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(spool.status().message().find("sequence number"), std::string::npos) << spool.status();
  }
  // In order, numbered as a spool numbers them: accepted, and numbering goes on after them.
  std::filesystem::remove_all(dir_);
  std::filesystem::create_directories(dir_);
  std::ofstream(SpoolFile(), std::ios::binary) << std::string("SURPSPL1") + frame(1) + frame(2) + frame(5);
  auto spool = OpenSpool();
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(Seqs(*spool->Pending()), (std::vector<uint64_t>{1, 2, 5}));
  EXPECT_EQ(*spool->Append(Record("y", 2)), 6u);
}

TEST_F(SpoolTest, AckedRecordsStayAckedAcrossReopen) {
  {
    auto spool = OpenSpool();
    ASSERT_NE(spool, nullptr);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(spool->Append(Record("j", i)).ok());
    ASSERT_TRUE(spool->AckThrough(2).ok());  // 1, 2
    ASSERT_TRUE(spool->Ack(4).ok());          // out of order: 3 still pending
    ASSERT_TRUE(spool->Ack(4).ok());          // a repeated ack is a no-op
    EXPECT_EQ(spool->acked_through(), 2u);
    EXPECT_EQ(spool->Ack(99).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    auto spool = OpenSpool();
    ASSERT_NE(spool, nullptr);
    EXPECT_EQ(Seqs(*spool->Pending()), (std::vector<uint64_t>{3, 5}));
    ASSERT_TRUE(spool->Ack(3).ok());
    // 3 closes the gap: the watermark jumps over the acked 4 to the pending 5.
    EXPECT_EQ(spool->acked_through(), 4u);
  }
  auto spool = OpenSpool();
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(Seqs(*spool->Pending()), (std::vector<uint64_t>{5}));
}

TEST_F(SpoolTest, SequenceNumbersNeverRepeatAcrossRestarts) {
  {
    auto spool = OpenSpool();
    ASSERT_NE(spool, nullptr);
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(spool->Append(Record("j", i)).ok());
    // Ack and compact everything away: the file holds no record, only the state file
    // remembers that 4 numbers were used.
    ASSERT_TRUE(spool->AckThrough(4).ok());
    ASSERT_TRUE(spool->Compact().ok());
    EXPECT_EQ(spool->pending_count(), 0u);
    EXPECT_EQ(spool->file_bytes(), 8);  // the header only
  }
  auto spool = OpenSpool();
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(spool->next_seq(), 5u);
  EXPECT_EQ(*spool->Append(Record("j", 9)), 5u);
}

TEST_F(SpoolTest, UnackedTailAfterStateSetsNextSeq) {
  // Appends after the last state write are in the spool file only; the next number
  // must come from the file (max seq + 1), not from the older state.
  {
    auto spool = OpenSpool();
    ASSERT_NE(spool, nullptr);
    ASSERT_TRUE(spool->Append(Record("j", 0)).ok());
    ASSERT_TRUE(spool->Ack(1).ok());  // state: next_seq 2
    ASSERT_TRUE(spool->Append(Record("j", 1)).ok());
    ASSERT_TRUE(spool->Append(Record("j", 2)).ok());
  }
  auto spool = OpenSpool();
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(spool->next_seq(), 4u);
  EXPECT_EQ(Seqs(*spool->Pending()), (std::vector<uint64_t>{2, 3}));
}

TEST_F(SpoolTest, CompactsWhenAckedBytesDominate) {
  SpoolOptions options;
  options.compact_min_acked_bytes = 1;  // compact as soon as acked frames are half the file
  auto spool = OpenSpool(options);
  ASSERT_NE(spool, nullptr);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(spool->Append(Record("j", i)).ok());
  const int64_t full = spool->file_bytes();
  EXPECT_EQ(full, FileSize());
  const int64_t frame = (full - 8) / 10;  // all frames have the same size here

  // 4 of 10 acked: below half, no compaction.
  ASSERT_TRUE(spool->AckThrough(4).ok());
  EXPECT_EQ(FileSize(), full);
  // 6 of 10: compacts to header + 4 frames.
  ASSERT_TRUE(spool->Ack(5).ok());
  ASSERT_TRUE(spool->Ack(6).ok());
  EXPECT_EQ(FileSize(), 8 + 4 * frame);
  EXPECT_EQ(spool->file_bytes(), 8 + 4 * frame);
  EXPECT_EQ(Seqs(*spool->Pending()), (std::vector<uint64_t>{7, 8, 9, 10}));

  // Appends after compaction go to the new file and survive reopen.
  EXPECT_EQ(*spool->Append(Record("j", 11)), 11u);
  spool.reset();
  auto again = OpenSpool(options);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(Seqs(*again->Pending()), (std::vector<uint64_t>{7, 8, 9, 10, 11}));
  EXPECT_FALSE(std::filesystem::exists(SpoolFile() + ".tmp"));
}

TEST_F(SpoolTest, CompactsABacklogLargerThanItsCopyBuffer) {
  // 300 frames of about 10 KiB: the 140 left after the ack take more than the 1 MiB that
  // compaction copies at a time, so the new file is written in several pieces.
  SpoolOptions options;
  options.compact_min_acked_bytes = 1;
  auto spool = OpenSpool(options);
  ASSERT_NE(spool, nullptr);
  auto job = [](int i) { return std::string(10'000, static_cast<char>('a' + i % 26)) + std::to_string(i); };
  for (int i = 1; i <= 300; ++i) ASSERT_TRUE(spool->Append(Record(job(i), i)).ok());
  ASSERT_TRUE(spool->AckThrough(160).ok());
  auto check = [&](UsageSpool& s) {
    absl::StatusOr<std::vector<UsageRecord>> pending = s.Pending();
    ASSERT_TRUE(pending.ok()) << pending.status();
    ASSERT_EQ(pending->size(), 140u);
    for (size_t k = 0; k < pending->size(); ++k) {
      const int i = 161 + static_cast<int>(k);
      EXPECT_EQ((*pending)[k].seq, static_cast<uint64_t>(i));
      EXPECT_EQ((*pending)[k].job_id, job(i));
      EXPECT_EQ((*pending)[k].start_ms, i);
    }
  };
  EXPECT_LT(FileSize(), 1'500'000);  // compacted: 140 of 300 frames
  EXPECT_GT(FileSize(), 1 << 20);
  EXPECT_EQ(spool->file_bytes(), FileSize());
  check(*spool);
  spool.reset();
  auto again = OpenSpool(options);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->recovery().truncated_bytes, 0);
  check(*again);
}

TEST_F(SpoolTest, RefusesDamagedStateOrForeignFile) {
  {
    auto spool = OpenSpool();
    ASSERT_NE(spool, nullptr);
    ASSERT_TRUE(spool->Append(Record("j", 0)).ok());
    ASSERT_TRUE(spool->Ack(1).ok());
  }
  // Flip one digit in the state file: its checksum no longer matches.
  const std::string state_path = dir_ + "/usage.state";
  std::string text;
  {
    const int fd = ::open(state_path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ASSERT_GT(n, 0);
    text.assign(buf, static_cast<size_t>(n));
    const size_t at = text.find("next_seq 2");
    ASSERT_NE(at, std::string::npos);
    ASSERT_EQ(::pwrite(fd, "3", 1, static_cast<off_t>(at + 9)), 1);
    ::close(fd);
  }
  EXPECT_EQ(UsageSpool::Open(dir_).status().code(), absl::StatusCode::kDataLoss);

  std::filesystem::remove_all(dir_);
  std::filesystem::create_directories(dir_);
  {
    const int fd = ::open(SpoolFile().c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_EQ(::write(fd, "not a spool", 11), 11);
    ::close(fd);
  }
  EXPECT_EQ(UsageSpool::Open(dir_).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace surplus::worker
