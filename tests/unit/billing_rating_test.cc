// Rating, calendar and dedupe: pure arithmetic, table-driven.

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "billing/calendar.h"
#include "billing/rating.h"
#include "billing/usage.h"

namespace surplus::billing {
namespace {

constexpr int64_t kHour = 3'600'000;  // ms

TEST(SplitByTime, CumulativeFloorSumsExactly) {
  struct Case {
    const char* name;
    int64_t start, end, gpu_ms;
    std::vector<int64_t> cuts;
    std::vector<int64_t> want;  // gpu_ms of each part, in time order
  };
  const Case cases[] = {
      {"no cuts", 0, 3, 10, {}, {10}},
      // 10 over three equal thirds: floor(10/3)=3, floor(20/3)=6, 10 -> 3, 3, 4.
      {"thirds", 0, 3, 10, {2, 1}, {3, 3, 4}},
      // A quarter of 10 is 2.5: floor gives 2, the rest (8) goes to the later part.
      {"quarter", 0, 4, 10, {1}, {2, 8}},
      // Cuts on or outside the interval and repeats are ignored: 15 halves [10, 20).
      {"ignored cuts", 10, 20, 100, {5, 10, 15, 15, 20, 25}, {50, 50}},
      // An empty interval keeps all of its gpu_ms in one part.
      {"empty interval", 5, 5, 7, {5}, {7}},
      {"zero gpu_ms", 0, 10, 0, {3}, {0, 0}},
  };
  for (const Case& c : cases) {
    std::vector<TimeSlice> got = SplitByTime(c.start, c.end, c.gpu_ms, c.cuts);
    ASSERT_EQ(got.size(), c.want.size()) << c.name;
    int64_t sum = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].gpu_ms, c.want[i]) << c.name << " part " << i;
      sum += got[i].gpu_ms;
    }
    EXPECT_EQ(sum, c.gpu_ms) << c.name;
    EXPECT_EQ(got.front().start_ms, c.start) << c.name;
    EXPECT_EQ(got.back().end_ms, c.end) << c.name;
  }
}

TEST(SplitByTime, PartDoesNotDependOnOtherCuts) {
  // [0,3) with G=10 cut at 1 alone gives [0,1)=3; adding a cut at 2 leaves [0,1)=3 and
  // splits the remaining 7 as 3 + 4. So splitting at a month boundary and a price change
  // in one pass or in two agrees on the outer parts.
  std::vector<TimeSlice> one = SplitByTime(0, 3, 10, {1});
  std::vector<TimeSlice> two = SplitByTime(0, 3, 10, {1, 2});
  ASSERT_EQ(one.size(), 2u);
  ASSERT_EQ(two.size(), 3u);
  EXPECT_EQ(one[0].gpu_ms, two[0].gpu_ms);
  EXPECT_EQ(one[1].gpu_ms, two[1].gpu_ms + two[2].gpu_ms);
}

TEST(SplitByTime, HugeValuesDoNotOverflow) {
  // G * D would overflow int64; the arithmetic is __int128.
  const int64_t end = int64_t{1} << 50;
  std::vector<TimeSlice> got = SplitByTime(0, end, end, {end / 2});
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].gpu_ms, end / 2);
  EXPECT_EQ(got[1].gpu_ms, end / 2);
}

TEST(PriceAt, PicksThePointInForce) {
  const PriceHistory h = {{100, 5}, {200, 7}};
  struct Case {
    int64_t t;
    Micros want;
  };
  // Before the first point the first price applies (worker clock slightly behind).
  const Case cases[] = {{50, 5}, {100, 5}, {199, 5}, {200, 7}, {1'000'000, 7}};
  for (const Case& c : cases) EXPECT_EQ(PriceAt(h, c.t), c.want) << c.t;
}

TEST(ValidatePriceHistory, RejectsBadHistories) {
  EXPECT_TRUE(ValidatePriceHistory({{0, 1}}).ok());
  EXPECT_FALSE(ValidatePriceHistory({}).ok());
  EXPECT_FALSE(ValidatePriceHistory({{0, -1}}).ok());
  EXPECT_FALSE(ValidatePriceHistory({{10, 1}, {10, 2}}).ok());
  EXPECT_FALSE(ValidatePriceHistory({{10, 1}, {5, 2}}).ok());
}

TEST(RateInterval, PriceChangeMidInterval) {
  struct Case {
    const char* name;
    int64_t gpu_ms;
    int64_t want_first_part;
    int64_t want_second_part;
    int64_t want_numerator;  // fits int64 here
  };
  // One wall hour [0, 1h); the price goes from $2.00 to $3.00 per GPU-hour at 30 min.
  const Case cases[] = {
      // Whole GPU: 1.8M ms at 2,000,000 + 1.8M ms at 3,000,000 = 9e12 (= $2.50 after / 3.6e6).
      {"whole gpu", kHour, 1'800'000, 1'800'000, 9'000'000'000'000},
      // 3g slice: gpu_ms = 3,600,000 * 3 / 7 = 1,542,857. Half of it is 771,428.5: the first
      // part gets floor = 771,428, the second 771,429.
      // numerator = 771,428 * 2e6 + 771,429 * 3e6 = 3,857,143,000,000.
      {"3g slice", 1'542'857, 771'428, 771'429, 3'857'143'000'000},
  };
  const PriceHistory h = {{0, 2'000'000}, {kHour / 2, 3'000'000}};
  for (const Case& c : cases) {
    absl::StatusOr<RatedUsage> got = RateInterval(0, kHour, c.gpu_ms, h);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->slices.size(), 2u) << c.name;
    EXPECT_EQ(got->slices[0].gpu_ms, c.want_first_part) << c.name;
    EXPECT_EQ(got->slices[0].price_per_gpu_hour, 2'000'000) << c.name;
    EXPECT_EQ(got->slices[1].start_ms, kHour / 2) << c.name;
    EXPECT_EQ(got->slices[1].gpu_ms, c.want_second_part) << c.name;
    EXPECT_EQ(got->slices[1].price_per_gpu_hour, 3'000'000) << c.name;
    EXPECT_EQ(static_cast<int64_t>(got->cost_numerator), c.want_numerator) << c.name;
  }
}

TEST(RateInterval, ExtraCutsAndBadInput) {
  // A price change at 40 and an extra cut (month boundary) at 70 inside [0, 100), G = 1000:
  // parts [0,40)=400 @1, [40,70)=300 @2, [70,100)=300 @2 -> numerator 400 + 600 + 600.
  const PriceHistory h = {{0, 1}, {40, 2}};
  const int64_t cuts[] = {70};
  absl::StatusOr<RatedUsage> got = RateInterval(0, 100, 1000, h, cuts);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->slices.size(), 3u);
  EXPECT_EQ(static_cast<int64_t>(got->cost_numerator), 1600);

  EXPECT_EQ(RateInterval(10, 5, 1, h).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RateInterval(0, 5, -1, h).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RateInterval(0, 5, 1, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Calendar, ParsesMonths) {
  struct Case {
    const char* text;
    int64_t start_ms, end_ms;
  };
  const Case cases[] = {
      {"1970-01", 0, 31 * kMsPerDay},
      // 2024 is a leap year: February has 29 days. 2024-02-01T00:00Z = 1,706,745,600 s.
      {"2024-02", 1'706'745'600'000, 1'706'745'600'000 + 29 * kMsPerDay},
      // 2100 is not a leap year (divisible by 100, not by 400); 2000 is.
      {"2100-02", DaysFromCivil(2100, 2, 1) * kMsPerDay, DaysFromCivil(2100, 2, 1) * kMsPerDay + 28 * kMsPerDay},
      {"2000-02", 949'363'200'000, 949'363'200'000 + 29 * kMsPerDay},
      // December rolls into January of the next year: 2024-12-01 = 1,733,011,200 s.
      {"2024-12", 1'733'011'200'000, 1'733'011'200'000 + 31 * kMsPerDay},
      {"1969-12", -31 * kMsPerDay, 0},
  };
  for (const Case& c : cases) {
    absl::StatusOr<BillingMonth> m = ParseBillingMonth(c.text);
    ASSERT_TRUE(m.ok()) << c.text << ": " << m.status();
    EXPECT_EQ(m->start_ms, c.start_ms) << c.text;
    EXPECT_EQ(m->end_ms, c.end_ms) << c.text;
    EXPECT_EQ(m->Label(), c.text);
  }
  for (const char* bad : {"2024-13", "2024-00", "2024-1", "24-01", "2024/01", "abcd-ef",
                          "0000-01", "", "2024-011", "+024-01"}) {
    EXPECT_EQ(ParseBillingMonth(bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(Calendar, CivilRoundTripAndContaining) {
  for (int64_t days = -800'000; days <= 800'000; days += 13) {
    const CivilDate d = CivilFromDays(days);
    ASSERT_EQ(DaysFromCivil(d.year, d.month, d.day), days);
  }
  EXPECT_EQ(BillingMonthContaining(1'706'745'600'000).Label(), "2024-02");
  EXPECT_EQ(BillingMonthContaining(1'706'745'600'000 - 1).Label(), "2024-01");
  EXPECT_EQ(BillingMonthContaining(-1).Label(), "1969-12");
  EXPECT_EQ(BillingMonthContaining(0).Label(), "1970-01");
  EXPECT_EQ(NextBillingMonth(MakeBillingMonth(2024, 12)).Label(), "2025-01");
}

UsageRecord Rec(const char* worker, uint64_t seq, int64_t gpu_ms) {
  UsageRecord r;
  r.worker_id = worker;
  r.seq = seq;
  r.job_id = "j1";
  r.tenant_id = "t1";
  r.gpu_model = "H100-80GB";
  r.shape = "1g.10gb";
  r.start_ms = 0;
  r.end_ms = 1000;
  r.gpu_ms = gpu_ms;
  return r;
}

TEST(DedupeUsage, KeepsFirstCopyAndFlagsConflicts) {
  // w1/1 delivered twice identically (a retry); w1/2 twice with different content (a
  // reused sequence number); w2/1 is a different key despite the same seq.
  std::vector<UsageRecord> in = {Rec("w1", 1, 10), Rec("w1", 2, 20), Rec("w1", 1, 10),
                                 Rec("w2", 1, 30), Rec("w1", 2, 21)};
  DedupeResult got = DedupeUsage(in);
  ASSERT_EQ(got.records.size(), 3u);
  EXPECT_EQ(got.records[0], in[0]);
  EXPECT_EQ(got.records[1], in[1]);  // first copy of w1/2 (gpu_ms 20) kept
  EXPECT_EQ(got.records[2], in[3]);
  EXPECT_EQ(got.duplicates, 2u);
  ASSERT_EQ(got.conflicting.size(), 1u);
  EXPECT_EQ(got.conflicting[0], std::make_pair(std::string("w1"), uint64_t{2}));
}

TEST(ValidateUsageRecord, RejectsBadRecords) {
  EXPECT_TRUE(ValidateUsageRecord(Rec("w", 1, 1)).ok());
  UsageRecord reversed = Rec("w", 1, 1);
  reversed.end_ms = -1;
  EXPECT_FALSE(ValidateUsageRecord(reversed).ok());
  UsageRecord negative = Rec("w", 1, -5);
  EXPECT_FALSE(ValidateUsageRecord(negative).ok());
  UsageRecord no_tenant = Rec("w", 1, 1);
  no_tenant.tenant_id.clear();
  EXPECT_FALSE(ValidateUsageRecord(no_tenant).ok());
}

}  // namespace
}  // namespace surplus::billing
