#!/usr/bin/env python3
"""Writes a synthetic pod list in the openb trace's format, for `surplus-bench pack`.

    bench/pod_mix.py MIX [--pods N] [--seed S] [--late GPUS] > pods.csv

MIX is a comma-separated list of GPUSxMILLI:WEIGHT terms: GPUS GPUs per pod, MILLI the
share of one GPU (gpu_milli; 1000 = whole GPUs), WEIGHT the term's share of the pods.
For example `1x1000:50,1x400:50` is half whole-GPU pods, half 3g.40gb-sized ones. Each
pod asks for 2, 4, 8 or 16 CPUs and 8, 16 or 64 GiB per GPU, drawn at random. The same
arguments always give the same list. `--late GPUS` holds back the pods of that many GPUs
and mixes them, one for one, into the last 40 % of the others: big jobs that come late.
"""

import argparse
import random
import sys


def parse_mix(text):
    terms = []
    for term in text.split(","):
        try:
            shape, weight = term.split(":")
            gpus, milli = shape.split("x")
            terms.append((int(gpus), int(milli), float(weight)))
        except ValueError:
            sys.exit(f"pod_mix.py: bad mix term {term!r}: want GPUSxMILLI:WEIGHT, e.g. 1x400:50")
        if terms[-1][0] < 1 or not 0 < terms[-1][1] <= 1000 or terms[-1][2] <= 0:
            sys.exit(f"pod_mix.py: bad mix term {term!r}: GPUS >= 1, 0 < MILLI <= 1000, WEIGHT > 0")
    return terms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mix")
    parser.add_argument("--pods", type=int, default=9000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--late", type=int, default=0, metavar="GPUS")
    args = parser.parse_args()
    terms = parse_mix(args.mix)
    total = sum(weight for _, _, weight in terms)
    rng = random.Random(args.seed)
    rows = []
    for i in range(args.pods):
        x = rng.uniform(0, total)
        for gpus, milli, weight in terms:
            x -= weight
            if x < 0:
                break
        cpu = rng.choice([2000, 4000, 8000, 16000]) * gpus
        memory = rng.choice([8192, 16384, 65536]) * gpus
        rows.append((f"pod-{i}", cpu, memory, gpus, milli))
    if args.late > 0:
        late = [r for r in rows if r[3] == args.late]
        rest = [r for r in rows if r[3] != args.late]
        cut = int(len(rest) * 0.6)
        tail = rest[cut:]
        mixed = [r for pair in zip(late, tail) for r in pair]
        rows = rest[:cut] + mixed + tail[len(late):] + late[len(tail):]
    out = sys.stdout
    out.write("name,cpu_milli,memory_mib,num_gpu,gpu_milli\n")
    for row in rows:
        out.write(",".join(str(v) for v in row) + "\n")


if __name__ == "__main__":
    main()
