// Tables, CSV, money and GPU-hours as the CLI prints them.

#include <gtest/gtest.h>

#include "src/cli/render.h"
#include "src/cli/views.h"

namespace surplus::cli {
namespace {

TEST(Table, AlignsColumnsAndDashesEmptyCells) {
  Table t({"ID", "STATE", "REASON"});
  t.AddRow({"j-1", "RUNNING", ""});
  t.AddRow({"job-22", "PENDING", "waiting for capacity"});
  // Widths: ID 6 ("job-22"), STATE 7; two spaces between, last column unpadded.
  EXPECT_EQ(t.RenderText(),
            "ID      STATE    REASON\n"
            "j-1     RUNNING  -\n"
            "job-22  PENDING  waiting for capacity\n");
}

TEST(Table, CsvQuotesOnlyWhenNeeded) {
  Table t({"a", "b"});
  t.AddRow({"plain", "x,y"});
  t.AddRow({"say \"hi\"", ""});
  EXPECT_EQ(t.RenderCsv(), "a,b\r\nplain,\"x,y\"\r\n\"say \"\"hi\"\"\",\r\n");
}

TEST(Details, AlignedLabels) {
  EXPECT_EQ(RenderDetailsText({{"id", "j-1"}, {"state", "RUNNING"}, {"reason", ""}}),
            "id:      j-1\n"
            "state:   RUNNING\n"
            "reason:  -\n");
}

TEST(Format, Money) {
  EXPECT_EQ(FormatPricePerGpuHour(2'100'000), "$2.10/GPU-h");
  EXPECT_EQ(FormatPricePerGpuHour(1), "$0.000001/GPU-h");
  EXPECT_EQ(FormatUsdPlain(1'500'000), "1.50");
  EXPECT_EQ(FormatUsdPlain(-250'000), "-0.25");
}

TEST(Format, GpuHoursRoundHalfToEven) {
  struct Case {
    int64_t gpu_ms;
    const char* text;
  };
  // One thousandth of a GPU-hour is 3'600 GPU-ms.
  const Case cases[] = {
      {0, "0.000"},
      {3'600'000, "1.000"},
      {5'400'000, "1.500"},
      {1'800, "0.000"},   // 0.0005 -> even 0.000
      {5'400, "0.002"},   // 0.0015 -> even 0.002
      {1'801, "0.001"},   // just above half
      {-3'600, "-0.001"},
      {86'400'000'000, "24000.000"},
  };
  for (const Case& c : cases) EXPECT_EQ(FormatGpuHours(c.gpu_ms), c.text) << c.gpu_ms;
}

TEST(Format, TimestampsAndDurations) {
  EXPECT_EQ(FormatTimestampMs(0), "");
  EXPECT_EQ(FormatTimestampMs(1'740'830'400'000), "2025-03-01T12:00:00Z");
  EXPECT_EQ(FormatDurationMs(5'400'000), "1h30m");
  EXPECT_EQ(FormatDurationMs(10'000), "10s");
  EXPECT_EQ(FormatDurationMs(2'500), "2s500ms");
  EXPECT_EQ(FormatDurationMs(0), "0s");
}

TEST(Views, ShapesStatesTiers) {
  v1::Shape s;
  s.set_slice_profile("3g.40gb");
  EXPECT_EQ(ShapeText(s), "3g.40gb");
  s.mutable_whole_gpus()->set_count(1);
  EXPECT_EQ(ShapeText(s), "1 GPU");
  s.mutable_gang()->set_nodes(2);
  s.mutable_gang()->set_gpus_per_node(8);
  EXPECT_EQ(ShapeText(s), "2x8 GPUs");
  // Host resources per node, when asked for.
  s.set_cpu_millis(12'000);
  s.set_memory_mib(96 * 1024);
  EXPECT_EQ(ShapeText(s), "2x8 GPUs, 12 CPUs, 96 GiB");
  s.set_cpu_millis(500);
  s.set_memory_mib(1500);
  EXPECT_EQ(ShapeText(s), "2x8 GPUs, 0.5 CPUs, 1500 MiB");
  s.set_cpu_millis(1000);
  s.set_memory_mib(0);
  EXPECT_EQ(ShapeText(s), "2x8 GPUs, 1 CPU");
  s.set_cpu_millis(1250);
  EXPECT_EQ(ShapeText(s), "2x8 GPUs, 1.25 CPUs");
  s.set_cpu_millis(2050);
  EXPECT_EQ(ShapeText(s), "2x8 GPUs, 2.05 CPUs");
  EXPECT_EQ(StateName(v1::JOB_STATE_PREEMPTED), "PREEMPTED");
  EXPECT_EQ(TierName(v1::TIER_ON_DEMAND), "on-demand");
  EXPECT_TRUE(IsTerminal(v1::JOB_STATE_LOST));
  EXPECT_FALSE(IsTerminal(v1::JOB_STATE_RUNNING));
}

TEST(Views, NodesShowWhatTheirHostOffersAndWhatIsHeld) {
  v1::ListNodesResponse nodes;
  v1::Node* sized = nodes.add_nodes();
  sized->set_name("n1");
  sized->set_cpu_millis(96'000);
  sized->set_memory_mib(768 * 1024);
  sized->set_cpu_millis_used(12'500);
  sized->set_memory_mib_used(96 * 1024);
  nodes.add_nodes()->set_name("old-worker");  // registered no size
  const std::string text = NodesTable(nodes).RenderText();
  EXPECT_NE(text.find("HOST"), std::string::npos) << text;
  EXPECT_NE(text.find("HOST-USED"), std::string::npos) << text;
  EXPECT_NE(text.find("96 CPUs, 768 GiB"), std::string::npos) << text;
  EXPECT_NE(text.find("12.5 CPUs, 96 GiB"), std::string::npos) << text;
  EXPECT_NE(text.find("-, -"), std::string::npos) << text;
  EXPECT_NE(text.find("0 CPUs, 0 GiB"), std::string::npos) << text;  // nothing held
  const std::string csv = NodesTable(nodes).RenderCsv();
  EXPECT_NE(csv.find("\"96 CPUs, 768 GiB\",\"12.5 CPUs, 96 GiB\""), std::string::npos) << csv;
}

TEST(Views, CapacityShowsTheHostHeldOfWhatTheNodesOffer) {
  v1::GetCapacityResponse capacity;
  v1::PoolCapacity* sized = capacity.add_pools();
  sized->set_gpu_model("H100-80GB");
  sized->set_cpu_millis_total(192'000);
  sized->set_cpu_millis_used(12'500);
  sized->set_memory_mib_total(1536 * 1024);
  sized->set_memory_mib_used(96 * 1024);
  capacity.add_pools()->set_gpu_model("A100-80GB");  // no node said its size
  const std::string text = CapacityTable(capacity).RenderText();
  EXPECT_NE(text.find("HOST-CPU-USED"), std::string::npos) << text;
  EXPECT_NE(text.find("12.5 CPUs / 192 CPUs"), std::string::npos) << text;
  EXPECT_NE(text.find("96 GiB / 1536 GiB"), std::string::npos) << text;
  EXPECT_NE(text.find("0 CPUs / -"), std::string::npos) << text;
}

TEST(Views, JsonIsOneObjectWithDefaults) {
  v1::Job job;
  job.set_id("j-1");
  job.set_price_micros_per_gpu_hour(2'100'000);
  const std::string json = ToJson(job);
  EXPECT_EQ(json.find('\n'), std::string::npos);
  EXPECT_NE(json.find("\"id\":\"j-1\""), std::string::npos) << json;
  // int64 as a string (protobuf JSON), and default fields present for scripts.
  EXPECT_NE(json.find("\"priceMicrosPerGpuHour\":\"2100000\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"hasExitCode\":false"), std::string::npos) << json;
}

TEST(Views, InvoiceCsvIsExact) {
  v1::Invoice inv;
  inv.set_tenant_id("acme");
  inv.set_period("2025-03");
  inv.set_status(v1::INVOICE_STATUS_DRAFT);
  v1::InvoiceLine* line = inv.add_lines();
  line->set_job_id("j-1");
  line->set_gpu_model("H100-80GB");
  line->set_shape("1 GPU");
  line->set_gpu_ms(5'400'000);                              // 1.5 GPU-h
  line->set_average_price_micros_per_gpu_hour(2'100'000);  // $2.10
  line->set_amount_micros(3'150'000);                       // 1.5 x 2.10 = $3.15
  inv.set_total_micros(3'150'000);
  EXPECT_EQ(InvoiceLinesTable(inv, true).RenderCsv(),
            "tenant_id,period,status,number,job_id,gpu_model,shape,gpu_ms,gpu_hours,"
            "average_price_usd_per_gpu_hour,amount_usd\r\n"
            "acme,2025-03,draft,,j-1,H100-80GB,1 GPU,5400000,1.500,2.10,3.15\r\n");
  const std::string text = InvoiceLinesTable(inv, false).RenderText();
  EXPECT_NE(text.find("$2.10/GPU-h"), std::string::npos) << text;
  EXPECT_NE(text.find("$3.15"), std::string::npos) << text;
}

}  // namespace
}  // namespace surplus::cli
