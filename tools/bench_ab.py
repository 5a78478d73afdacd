#!/usr/bin/env python3
"""A/B speed of two `rnn` binaries on the benchmark workloads, alternated in one run.

Usage (any Python 3, no packages needed):

    cargo build --release -p rnn-cli && cp target/release/rnn /tmp/rnn-new
    git worktree add /tmp/rnn-base <old commit> && (cd /tmp/rnn-base && cargo build --release -p rnn-cli)
    python3 tools/bench_ab.py --old /tmp/rnn-base/target/release/rnn --new /tmp/rnn-new \
        [--cells rnn,lstm,gru] [--presets seed,small,medium,large] [--modes infer,train] \
        [--rounds 5] [--threads 2] [--min-time 1.0] [--extra "--peephole"]

For every workload (cell x preset x mode, `rnn bench --json`, batch-first, one layer) the two
binaries run alternately `--rounds` times, the order flipping each round (old/new, new/old, ...)
so that drift of the machine's speed (other tenants) hits both alike. Each run reports its
median wall time; per round the script takes the ratio old/new (> 1: the new binary is faster)
and prints the median of those ratios with their range (min..max), and the median times.
A ratio range that straddles 1.0 is "within noise".

`--extra` passes more arguments to the new binary only (e.g. to time a variant against the
base cell of the old binary); `--extra-old` likewise for the old one.
"""

import argparse
import json
import statistics
import subprocess


def bench(binary, cell, preset, mode, threads, min_time, extra):
    cmd = [binary, "bench", "--cell", cell, "--preset", preset, "--mode", mode,
           "--threads", str(threads), "--min-time", str(min_time), "--json"] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="the reference binary")
    p.add_argument("--new", required=True, help="the binary under test")
    p.add_argument("--cells", default="rnn,lstm,gru")
    p.add_argument("--presets", default="seed,small,medium,large")
    p.add_argument("--modes", default="infer,train")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--extra", default="", help="more arguments for the new binary")
    p.add_argument("--extra-old", default="", help="more arguments for the old binary")
    args = p.parse_args()
    print(f"old: {args.old}\nnew: {args.new} {args.extra}\n{args.rounds} rounds, "
          f"{args.threads} threads, old/new > 1 means the new binary is faster\n")
    print("| cell | preset | mode | old ms | new ms | old/new | range |")
    print("|---|---|---|---|---|---|---|")
    for cell in args.cells.split(","):
        for preset in args.presets.split(","):
            for mode in args.modes.split(","):
                olds, news, ratios = [], [], []
                for r in range(args.rounds):
                    run_old = lambda: bench(args.old, cell, preset, mode, args.threads,
                                            args.min_time, args.extra_old.split())
                    run_new = lambda: bench(args.new, cell, preset, mode, args.threads,
                                            args.min_time, args.extra.split())
                    if r % 2 == 0:
                        o, n = run_old(), run_new()
                    else:
                        n, o = run_new(), run_old()
                    olds.append(o)
                    news.append(n)
                    ratios.append(o / n)
                print(f"| {cell} | {preset} | {mode} | {statistics.median(olds):.3f} | "
                      f"{statistics.median(news):.3f} | {statistics.median(ratios):.3f} | "
                      f"{min(ratios):.3f}..{max(ratios):.3f} |", flush=True)


if __name__ == "__main__":
    main()
