#!/usr/bin/env python3
"""Writes a synthetic pod list in the openb trace's format, for `surplus-bench pack`.

    bench/pod_mix.py MIX [--pods N] [--seed S] > pods.csv

MIX is a comma-separated list of GPUSxMILLI:WEIGHT terms: GPUS GPUs per pod, MILLI the
share of one GPU (gpu_milli; 1000 = whole GPUs), WEIGHT the term's share of the pods.
For example `1x1000:50,1x400:50` is half whole-GPU pods, half 3g.40gb-sized ones. Each
pod asks for 2, 4, 8 or 16 CPUs and 8, 16 or 64 GiB per GPU, drawn at random. The same
arguments always give the same list.
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
    args = parser.parse_args()
    terms = parse_mix(args.mix)
    total = sum(weight for _, _, weight in terms)
    rng = random.Random(args.seed)
    out = sys.stdout
    out.write("name,cpu_milli,memory_mib,num_gpu,gpu_milli\n")
    for i in range(args.pods):
        x = rng.uniform(0, total)
        for gpus, milli, weight in terms:
            x -= weight
            if x < 0:
                break
        cpu = rng.choice([2000, 4000, 8000, 16000]) * gpus
        memory = rng.choice([8192, 16384, 65536]) * gpus
        out.write(f"pod-{i},{cpu},{memory},{gpus},{milli}\n")


if __name__ == "__main__":
    main()
