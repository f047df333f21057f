// surplus-bench: scheduler speed, packing quality and harvesting on synthetic fleets and
// the Alibaba 2023 GPU trace; the submit path when built with the API client.

#include <cstdio>
#include <cstring>
#include <string>

#include "bench/bench.h"

namespace {

void Usage() {
  std::fprintf(stderr,
               "usage: surplus-bench <subcommand> [flags] [--json]\n"
               "  sched   --nodes N --jobs M [--rounds R] [--seed S]\n          [--no-runtimes] [--one-gpu] [--host | --host-sized]\n"
               "          scheduler round time at fleet scale, full and incremental\n"
               "  quote   --nodes N --jobs M [--quotes Q] [--fresh-quotes F] [--seed S]\n          [--no-runtimes] [--one-gpu]\n"
               "          quote time on a busy fleet: dry round on a kept engine vs a fresh engine\n"
               "  pack    --nodes NODES.csv --pods PODS.csv [--gpu-only]\n"
               "          packing quality replaying a GPU trace (ours, first-fit, best-fit)\n"
               "  harvest --nodes NODES.csv --pods PODS.csv [--window-s S] [--notice-s S]\n"
               "          owner-idle GPU time sold and reclaim latency\n"
#ifdef SURPLUS_HAVE_SUBMIT_BENCH
               "  submit  job submission throughput and latency through the API\n"
               "  telemetry [--nodes N] [--threads T]\n"
               "          node telemetry reports per second the control plane's database path absorbs\n"
               "  quote-api [--nodes N] [--running R] [--pending P] [--quotes Q]\n"
               "          quote latency through a running control plane on a fleet written into its database\n"
#endif
  );
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    Usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "sched") return surplus::bench::RunSchedBench(argc - 1, argv + 1);
  if (cmd == "quote") return surplus::bench::RunQuoteBench(argc - 1, argv + 1);
  if (cmd == "pack") return surplus::bench::RunPackBench(argc - 1, argv + 1);
  if (cmd == "harvest") return surplus::bench::RunHarvestBench(argc - 1, argv + 1);
#ifdef SURPLUS_HAVE_SUBMIT_BENCH
  if (cmd == "submit") return surplus::bench::RunSubmitBench(argc - 1, argv + 1);
  if (cmd == "telemetry") return surplus::bench::RunTelemetryBench(argc - 1, argv + 1);
  if (cmd == "quote-api") return surplus::bench::RunQuoteApiBench(argc - 1, argv + 1);
#endif
  std::fprintf(stderr, "unknown subcommand '%s'\n", cmd.c_str());
  Usage();
  return 2;
}
