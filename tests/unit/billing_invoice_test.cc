// Invoices and their renderings: the numbers are worked out in the comments.

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "billing/calendar.h"
#include "billing/invoice.h"
#include "billing/render.h"

namespace surplus::billing {
namespace {

constexpr int64_t kHour = 3'600'000;  // ms
// 2025-01-01T00:00Z and 2025-02-01T00:00Z.
constexpr int64_t kJan1 = 1'735'689'600'000;
constexpr int64_t kFeb1 = 1'738'368'000'000;

UsageRecord Rec(uint64_t seq, const char* job, int64_t start_ms, int64_t end_ms,
                int64_t gpu_ms, const char* tenant = "acme") {
  UsageRecord r;
  r.worker_id = "node-1";
  r.seq = seq;
  r.job_id = job;
  r.tenant_id = tenant;
  r.gpu_model = "H100-80GB";
  r.shape = "7g.80gb";
  r.start_ms = start_ms;
  r.end_ms = end_ms;
  r.gpu_ms = gpu_ms;
  return r;
}

const InvoiceLine* FindLine(const Invoice& inv, const std::string& job) {
  for (const InvoiceLine& l : inv.lines) {
    if (l.job_id == job) return &l;
  }
  return nullptr;
}

TEST(BuildInvoice, RoundsOncePerLineHalfToEven) {
  // Every job pays $1.80/GPU-h = 1,800,000 micros; one GPU-ms costs 1.8e6 / 3.6e6 = 0.5
  // micro-dollars, so small lines land exactly on halves.
  struct Case {
    const char* job;
    std::vector<int64_t> record_gpu_ms;  // one record each, all in January
    Micros want_amount;
  };
  const Case cases[] = {
      {"j-1ms", {1}, 0},  // 0.5 -> 0 (ties go to even)
      {"j-3ms", {3}, 2},  // 1.5 -> 2
      {"j-5ms", {5}, 2},  // 2.5 -> 2
      {"j-7ms", {7}, 4},  // 3.5 -> 4
      // Two 1 ms records: rounding per record would give 0 + 0; once per line gives
      // (1 + 1) * 1.8e6 / 3.6e6 = 1.
      {"j-two", {1, 1}, 1},
  };
  PriceBook prices;
  prices.by_pool["H100-80GB"] = {{0, 1'800'000}};
  std::vector<UsageRecord> records;
  uint64_t seq = 0;
  Micros want_total = 0;
  for (const Case& c : cases) {
    for (int64_t g : c.record_gpu_ms) {
      ++seq;
      records.push_back(Rec(seq, c.job, kJan1 + static_cast<int64_t>(seq) * 10,
                            kJan1 + static_cast<int64_t>(seq) * 10 + 5, g));
    }
    want_total += c.want_amount;
  }
  absl::StatusOr<Invoice> inv = BuildInvoice("acme", MakeBillingMonth(2025, 1), records, prices);
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_EQ(inv->lines.size(), std::size(cases));
  for (const Case& c : cases) {
    const InvoiceLine* line = FindLine(*inv, c.job);
    ASSERT_NE(line, nullptr) << c.job;
    EXPECT_EQ(line->amount, c.want_amount) << c.job;
    EXPECT_EQ(line->average_price_per_gpu_hour, 1'800'000) << c.job;
  }
  // 0 + 2 + 2 + 4 + 1: the total is the sum of rounded lines.
  EXPECT_EQ(inv->total, want_total);
  EXPECT_EQ(inv->total, 9);
  EXPECT_EQ(inv->status, InvoiceStatus::kDraft);
  EXPECT_TRUE(inv->invoice_number.empty());
}

TEST(BuildInvoice, SplitsRecordAtMonthBoundary) {
  // 2025-01-31T23:00Z .. 2025-02-01T01:00Z, 7,200,001 GPU-ms at $2.00/GPU-h.
  // January's hour gets floor(7,200,001 / 2) = 3,600,000 GPU-ms -> $2.00 exactly;
  // February's gets the other 3,600,001 -> 3,600,001 * 2e6 / 3.6e6 = 2,000,000.56 -> 2,000,001.
  PriceBook prices;
  prices.by_job["j"] = {{0, 2'000'000}};
  const std::vector<UsageRecord> records = {Rec(1, "j", kFeb1 - kHour, kFeb1 + kHour, 7'200'001)};

  struct Case {
    BillingMonth month;
    int64_t want_gpu_ms;
    Micros want_amount;
  };
  const Case cases[] = {
      {MakeBillingMonth(2025, 1), 3'600'000, 2'000'000},
      {MakeBillingMonth(2025, 2), 3'600'001, 2'000'001},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Invoice> inv = BuildInvoice("acme", c.month, records, prices);
    ASSERT_TRUE(inv.ok()) << inv.status();
    ASSERT_EQ(inv->lines.size(), 1u) << c.month.Label();
    EXPECT_EQ(inv->lines[0].gpu_ms, c.want_gpu_ms) << c.month.Label();
    EXPECT_EQ(inv->lines[0].amount, c.want_amount) << c.month.Label();
    EXPECT_EQ(inv->total, c.want_amount) << c.month.Label();
  }
  // March has none of it.
  absl::StatusOr<Invoice> march = BuildInvoice("acme", MakeBillingMonth(2025, 3), records, prices);
  ASSERT_TRUE(march.ok());
  EXPECT_TRUE(march->lines.empty());
  EXPECT_EQ(march->total, 0);
}

TEST(BuildInvoice, PriceChangeAndMonthBoundaryInOneRecord) {
  // One GPU from Jan 31 22:00 to Feb 1 01:00 (3 h, 10,800,000 GPU-ms). The job's price
  // drops from $3.00 to $1.00 at 23:30 and the month ends at 00:00.
  // January: 1.5 h @ $3 + 0.5 h @ $1 = 4.5 + 0.5 = $5.00, 7,200,000 GPU-ms,
  //          average 5e6 / 2 h = $2.50/GPU-h.
  // February: 1 h @ $1 = $1.00.
  PriceBook prices;
  prices.by_job["j"] = {{0, 3'000'000}, {kFeb1 - kHour / 2, 1'000'000}};
  const std::vector<UsageRecord> records = {
      Rec(1, "j", kFeb1 - 2 * kHour, kFeb1 + kHour, 3 * kHour)};
  absl::StatusOr<Invoice> jan = BuildInvoice("acme", MakeBillingMonth(2025, 1), records, prices);
  ASSERT_TRUE(jan.ok()) << jan.status();
  ASSERT_EQ(jan->lines.size(), 1u);
  EXPECT_EQ(jan->lines[0].gpu_ms, 2 * kHour);
  EXPECT_EQ(jan->lines[0].amount, 5'000'000);
  EXPECT_EQ(jan->lines[0].average_price_per_gpu_hour, 2'500'000);
  absl::StatusOr<Invoice> feb = BuildInvoice("acme", MakeBillingMonth(2025, 2), records, prices);
  ASSERT_TRUE(feb.ok()) << feb.status();
  EXPECT_EQ(feb->total, 1'000'000);
}

TEST(BuildInvoice, JobHistoryWinsOverPool) {
  // j-spot has its own history ($1.50, its capped clearing price); j-od uses the pool's
  // list price ($4.00). j-spot: 1 GPU-h -> $1.50; j-od: 0.5 GPU-h -> $2.00. Total $3.50.
  PriceBook prices;
  prices.by_job["j-spot"] = {{0, 1'500'000}};
  prices.by_pool["H100-80GB"] = {{0, 4'000'000}};
  const std::vector<UsageRecord> records = {
      Rec(1, "j-spot", kJan1, kJan1 + kHour, kHour),
      Rec(2, "j-od", kJan1, kJan1 + kHour / 2, kHour / 2),
      Rec(3, "j-other", kJan1, kJan1 + kHour, kHour, "other-tenant"),
  };
  absl::StatusOr<Invoice> inv = BuildInvoice("acme", MakeBillingMonth(2025, 1), records, prices);
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_EQ(inv->lines.size(), 2u);
  EXPECT_EQ(inv->lines[0].job_id, "j-od");  // sorted by job id
  EXPECT_EQ(inv->lines[0].amount, 2'000'000);
  EXPECT_EQ(inv->lines[1].job_id, "j-spot");
  EXPECT_EQ(inv->lines[1].amount, 1'500'000);
  EXPECT_EQ(inv->total, 3'500'000);
}

TEST(BuildInvoices, OnePerTenantWithUsage) {
  PriceBook prices;
  prices.by_pool["H100-80GB"] = {{0, 1'000'000}};
  const std::vector<UsageRecord> records = {
      Rec(1, "a1", kJan1, kJan1 + kHour, kHour, "zeta"),
      Rec(2, "b1", kJan1, kJan1 + kHour, 2 * kHour, "alpha"),
      Rec(3, "c1", kFeb1, kFeb1 + kHour, kHour, "feb-only"),
  };
  absl::StatusOr<std::vector<Invoice>> got =
      BuildInvoices(MakeBillingMonth(2025, 1), records, prices);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].tenant_id, "alpha");
  EXPECT_EQ((*got)[0].total, 2'000'000);
  EXPECT_EQ((*got)[1].tenant_id, "zeta");
  EXPECT_EQ((*got)[1].total, 1'000'000);
}

TEST(BuildInvoice, Errors) {
  PriceBook prices;
  prices.by_job["j"] = {{0, 1'000'000}};
  const BillingMonth jan = MakeBillingMonth(2025, 1);

  // The same (worker, seq) twice would bill twice: refused.
  std::vector<UsageRecord> dup = {Rec(1, "j", kJan1, kJan1 + 10, 10),
                                  Rec(1, "j", kJan1, kJan1 + 10, 10)};
  EXPECT_EQ(BuildInvoice("acme", jan, dup, prices).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildInvoices(jan, dup, prices).status().code(),
            absl::StatusCode::kInvalidArgument);
  // After DedupeUsage it bills once.
  DedupeResult deduped = DedupeUsage(dup);
  EXPECT_TRUE(BuildInvoice("acme", jan, deduped.records, prices).ok());

  // No history for the job nor its pool.
  std::vector<UsageRecord> unpriced = {Rec(1, "nope", kJan1, kJan1 + 10, 10)};
  EXPECT_EQ(BuildInvoice("acme", jan, unpriced, prices).status().code(),
            absl::StatusCode::kFailedPrecondition);

  std::vector<UsageRecord> reversed = {Rec(1, "j", kJan1 + 10, kJan1, 10)};
  EXPECT_EQ(BuildInvoice("acme", jan, reversed, prices).status().code(),
            absl::StatusCode::kInvalidArgument);

  // More GPU-ms than an int64 amount can hold: 9.2e18 GPU-ms at $1e6/h.
  PriceBook pricey;
  pricey.by_job["j"] = {{0, 1'000'000'000'000}};
  std::vector<UsageRecord> huge = {Rec(1, "j", kJan1, kJan1 + 1000, INT64_MAX / 2)};
  EXPECT_EQ(BuildInvoice("acme", jan, huge, pricey).status().code(),
            absl::StatusCode::kOutOfRange);
}

Invoice SampleInvoice() {
  // 1.5 GPU-h at $2.10 = $3.15.
  Invoice inv;
  inv.tenant_id = "acme \"labs\"";
  inv.month = MakeBillingMonth(2025, 1);
  inv.status = InvoiceStatus::kFinalized;
  inv.invoice_number = "INV-2025-0001";
  InvoiceLine line;
  line.job_id = "j,1";
  line.gpu_model = "H100-80GB";
  line.shape = "3g.40gb";
  line.gpu_ms = 5'400'000;
  line.average_price_per_gpu_hour = 2'100'000;
  line.amount = 3'150'000;
  inv.lines.push_back(line);
  inv.total = 3'150'000;
  return inv;
}

TEST(Render, FormatsFields) {
  struct Case {
    int64_t gpu_ms;
    const char* want;
  };
  // Thousandths of a GPU-hour are 3,600 GPU-ms: 1,800 is half of one (-> 0, even),
  // 5,400 is one and a half (-> 2), 1,542,857 is 428.571 thousandths (-> 429).
  const Case hours[] = {{0, "0.000"},       {1'800, "0.000"},       {5'400, "0.002"},
                        {3'600'000, "1.000"}, {1'542'857, "0.429"}, {-3'600, "-0.001"}};
  for (const Case& c : hours) EXPECT_EQ(FormatGpuHours(c.gpu_ms), c.want) << c.gpu_ms;

  EXPECT_EQ(FormatUsdDecimal(2'100'000), "2.10");
  EXPECT_EQ(FormatUsdDecimal(-1), "-0.000001");
  EXPECT_EQ(CsvField("plain"), "plain");
  EXPECT_EQ(CsvField("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(JsonString("a\"b\\c\nd\x01\xc3\xa9"), "\"a\\\"b\\\\c\\nd\\u0001\xc3\xa9\"");
}

TEST(Render, Csv) {
  const std::string want =
      "invoice_number,tenant_id,month,status,row,job_id,gpu_model,shape,gpu_ms,gpu_hours,"
      "avg_price_usd_per_gpu_hour,amount_usd,amount_micros\r\n"
      "INV-2025-0001,\"acme \"\"labs\"\"\",2025-01,finalized,line,\"j,1\",H100-80GB,3g.40gb,"
      "5400000,1.500,2.10,3.15,3150000\r\n"
      "INV-2025-0001,\"acme \"\"labs\"\"\",2025-01,finalized,total,,,,5400000,1.500,,3.15,"
      "3150000\r\n";
  EXPECT_EQ(RenderInvoiceCsv(SampleInvoice()), want);
}

TEST(Render, Json) {
  const std::string want =
      "{\"invoice_number\":\"INV-2025-0001\",\"tenant_id\":\"acme \\\"labs\\\"\","
      "\"month\":\"2025-01\",\"period_start_ms\":1735689600000,"
      "\"period_end_ms\":1738368000000,\"status\":\"finalized\",\"currency\":\"USD\","
      "\"lines\":[{\"job_id\":\"j,1\",\"gpu_model\":\"H100-80GB\",\"shape\":\"3g.40gb\","
      "\"gpu_ms\":5400000,\"gpu_hours\":\"1.500\",\"avg_price_micros_per_gpu_hour\":2100000,"
      "\"avg_price_usd_per_gpu_hour\":\"2.10\",\"amount_micros\":3150000,"
      "\"amount_usd\":\"3.15\"}],\"total_micros\":3150000,\"total_usd\":\"3.15\"}";
  EXPECT_EQ(RenderInvoiceJson(SampleInvoice()), want);
}

TEST(Render, Table) {
  const std::string table = RenderInvoiceTable(SampleInvoice());
  EXPECT_NE(table.find("Invoice INV-2025-0001"), std::string::npos) << table;
  EXPECT_NE(table.find("Period:  2025-01 (UTC)"), std::string::npos) << table;
  EXPECT_NE(table.find("j,1"), std::string::npos) << table;
  EXPECT_NE(table.find("$3.15"), std::string::npos) << table;
  EXPECT_NE(table.find("TOTAL"), std::string::npos) << table;
  Invoice draft = SampleInvoice();
  draft.invoice_number.clear();
  draft.status = InvoiceStatus::kDraft;
  EXPECT_NE(RenderInvoiceTable(draft).find("Invoice (draft)"), std::string::npos);
}

}  // namespace
}  // namespace surplus::billing
