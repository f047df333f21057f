#include <gtest/gtest.h>

#include "surplus/gpu_models.h"
#include "surplus/host_resources.h"
#include "surplus/money.h"

namespace surplus {
namespace {

TEST(DivRoundHalfEven, RoundsTiesToEven) {
  struct Case {
    Int128 num, den, want;
  };
  // 5/2 = 2.5 -> 2 (even); 7/2 = 3.5 -> 4; 11/4 = 2.75 -> 3; 9/4 = 2.25 -> 2; -5/2 -> -2.
  const Case cases[] = {{5, 2, 2}, {7, 2, 4}, {11, 4, 3}, {9, 4, 2}, {-5, 2, -2}, {-7, 2, -4}, {0, 3, 0}};
  for (const auto& c : cases) {
    EXPECT_EQ(static_cast<int64_t>(DivRoundHalfEven(c.num, c.den)), static_cast<int64_t>(c.want))
        << static_cast<int64_t>(c.num) << "/" << static_cast<int64_t>(c.den);
  }
}

TEST(Money, FormatsDollars) {
  EXPECT_EQ(FormatUsd(2'100'000), "$2.10");
  EXPECT_EQ(FormatUsd(1), "$0.000001");
  EXPECT_EQ(FormatUsd(-1'500'000), "-$1.50");
  EXPECT_EQ(FormatUsd(0), "$0.00");
}

TEST(Money, ParsesDollars) {
  EXPECT_EQ(*ParseUsd("2.10", 1'000'000'000), 2'100'000);
  EXPECT_EQ(*ParseUsd("$3", 1'000'000'000), 3'000'000);
  EXPECT_EQ(*ParseUsd("0.000001", 1'000'000'000), 1);
  EXPECT_FALSE(ParseUsd("0.0000001", 1'000'000'000).ok());
  EXPECT_FALSE(ParseUsd("-1", 1'000'000'000).ok());
  EXPECT_FALSE(ParseUsd("abc", 1'000'000'000).ok());
  EXPECT_FALSE(ParseUsd("2000", 1'000'000'000).ok());  // above $1000 max
}

TEST(GpuModels, H100PlacementTableMatchesNvidia) {
  const GpuModel* h100 = FindGpuModel("h100");
  ASSERT_NE(h100, nullptr);
  EXPECT_EQ(h100->name, "H100-80GB");
  const SliceProfile* p3 = h100->FindProfile("3g.40gb");
  ASSERT_NE(p3, nullptr);
  EXPECT_EQ(p3->starts, (std::vector<int>{0, 4}));  // a 3g may start only at 0 or 4
  EXPECT_EQ(p3->sm_count, 60);
  EXPECT_EQ(p3->MaskAt(4), 0xF0);
  EXPECT_TRUE(h100->WholeGpu().IsWholeGpu());
  EXPECT_EQ(h100->WholeGpu().MaskAt(0), kFullGpuMask);
  EXPECT_TRUE(IsKnownSliceProfile("1g.10gb"));
  EXPECT_FALSE(IsKnownSliceProfile("5g.50gb"));
}

TEST(GpuModels, GpuMillisecondsScalesByComputeUnits) {
  // 7000 ms on a 1g slice = 7000 * 1/7 = 1000 GPU-ms; on 2 whole GPUs = 14000.
  EXPECT_EQ(GpuMilliseconds(7000, 1, 1), 1000);
  EXPECT_EQ(GpuMilliseconds(7000, 7, 2), 14000);
  EXPECT_EQ(GpuMilliseconds(10, 3, 1), 4);  // 30/7 = 4.28 truncated
}

TEST(GpuModels, PlacementUnitsAreTheSlicesElseAWholeGpu) {
  const GpuModel* h100 = FindGpuModel("H100-80GB");
  EXPECT_EQ(PlacementUnitsPerGpu(h100, "3g.40gb"), 3);
  EXPECT_EQ(PlacementUnitsPerGpu(h100, "7g.80gb"), 7);
  EXPECT_EQ(PlacementUnitsPerGpu(h100, ""), 7);            // whole GPUs name no profile
  EXPECT_EQ(PlacementUnitsPerGpu(h100, "3g.71gb"), 7);     // not an H100 profile
  EXPECT_EQ(PlacementUnitsPerGpu(nullptr, "3g.40gb"), 7);  // unknown model
}

TEST(HostCharge, IsWhatWasAskedElseTheGpuShare) {
  EXPECT_EQ(HostCharge(3'000, 96'000, 7, 8), 3'000);    // asked: that
  EXPECT_EQ(HostCharge(0, 96'000, 7, 8), 12'000);       // a whole GPU of 8: 1/8
  EXPECT_EQ(HostCharge(0, 96'000, 14, 8), 24'000);      // two of them
  EXPECT_EQ(HostCharge(0, 96'000, 1, 8), 96'000 / 56);  // a 1g slice: 1/56, rounded down
  EXPECT_EQ(HostCharge(0, 0, 7, 8), 0);                 // size unknown: nothing charged
  EXPECT_EQ(HostCharge(0, 8'000, 7, 0), 8'000);         // a node without GPUs counts as one
}

}  // namespace
}  // namespace surplus
