#!/usr/bin/env python3
"""Side-by-side speed of `rnn bench` and PyTorch (and ONNX Runtime for inference).

Same workloads and protocol on both sides: one layer, unidirectional, batch-first, f32, the
same thread count; warm-up runs, then repetitions until at least 5 runs and 1 second; the
median wall time. Each workload alternates between the libraries `--rounds` times (default
3) and each side reports the median of its round medians, with the range of the per-round
ratios: the machine's speed drifts (other tenants on the host), and alternating evens it out.
The "best-run ratio" column divides the fastest single run of each side over all rounds: a
second reading, less sensitive to the host's slow moments than the median (the acceptance
uses the median).
`train` is forward, loss = sum of outputs, backward to every weight and the
input. The runs alternate between the libraries workload by workload, so that both see the
same machine state. Prints a Markdown table of ratios (PyTorch time / rnn time: > 1 means rnn
is faster) with GFLOP/s, and the machine's GEMM ceiling (a 2048-cube f32 matmul in PyTorch)
measured in the same run.

Usage (in a virtual environment with torch, and onnx + onnxruntime for the ORT column):
    cargo build --release -p rnn-cli
    python tools/bench_vs_pytorch.py [--threads 2] [--cells rnn,lstm,gru]
        [--presets seed,small,medium,large] [--modes infer,train] [--memory] [--no-ort]
    python tools/bench_vs_pytorch.py --presets step,step20 --modes infer   # step by step
    python tools/bench_vs_pytorch.py --precision bf16|int8 [--presets small,medium,large]
        # reduced precision: rnn in that precision next to PyTorch bf16, autocast, OpenVINO bf16
        # and ONNX Runtime int8, with each one's error against f64 (tools/bench_precision.py)
"""
import argparse
import warnings
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

# (batch, seq, input, hidden). The first four are the speed issue's workloads (the default);
# `step` and `step20` are step-by-step inference at batch 1 (a cell, sampling, a deployed model
# fed as its input arrives), where per-call costs such as packing the weights dominate.
PRESETS = {"seed": (3, 5, 4, 2), "small": (32, 50, 64, 128),
           "medium": (64, 100, 256, 512), "large": (64, 100, 1024, 1024),
           "step": (1, 1, 256, 512), "step20": (1, 20, 256, 512)}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNN_BIN = os.path.join(ROOT, "target", "release", "rnn")


def rss_mb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def timed(fn, warmup=3, min_reps=5, min_time=1.0):
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    n = len(times)
    median = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    return {"median_ms": median, "min_ms": times[0], "max_ms": times[-1], "reps": n}


def make_module(cell, i, h):
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    return cls(i, h, batch_first=True)


def torch_bench(cell, preset, mode):
    b, t, i, h = PRESETS[preset]
    torch.manual_seed(0)
    m = make_module(cell, i, h)
    x = torch.rand(b, t, i) * 2 - 1
    if mode == "infer":
        def fn():
            with torch.inference_mode():
                m(x)
    else:
        def fn():
            m.zero_grad(set_to_none=True)
            xr = x.clone().requires_grad_(True)
            out, _ = m(xr)
            out.sum().backward()
    return timed(fn)


def ort_bench(cell, preset, threads):
    import onnxruntime as ort
    b, t, i, h = PRESETS[preset]
    torch.manual_seed(0)
    m = make_module(cell, i, h)
    x = torch.rand(b, t, i) * 2 - 1
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        kwargs = {}
        try:
            torch.onnx.export(m, (x,), path, input_names=["x"], dynamo=False, **kwargs)
        except TypeError:
            torch.onnx.export(m, (x,), path, input_names=["x"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        return timed(lambda: sess.run(None, feed))


def settle():
    """Lets the peers' worker threads, which spin for a while after their last task (OpenMP,
    ONNX Runtime's pool), park before `rnn` starts in its own process: without this pause the
    spinning threads of this process took CPU from the first runs of `rnn bench` on 2 cores."""
    time.sleep(0.3)


def rnn_bench(cell, preset, mode, threads):
    b, t, i, h = PRESETS[preset]
    settle()
    out = subprocess.run([RNN_BIN, "bench", "--cell", cell, "--batch", str(b), "--seq", str(t),
                          "--input", str(i), "--hidden", str(h), "--mode", mode,
                          "--threads", str(threads), "--json"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def flops(cell, preset, mode):
    b, t, i, h = PRESETS[preset]
    f = 2.0 * b * t * (i + h) * GATES[cell] * h
    return f * (3 if mode == "train" else 1)


def gemm_ceiling():
    a = torch.rand(2048, 2048)
    bm = torch.rand(2048, 2048)
    r = timed(lambda: torch.mm(a, bm), warmup=2, min_reps=5, min_time=1.0)
    return 2 * 2048 ** 3 / (r["min_ms"] * 1e-3) / 1e9


def torch_memory(cell, preset, threads):
    """Peak RSS growth of one PyTorch training step, in a fresh process."""
    code = (
        "import torch,sys;sys.path.insert(0,%r);import bench_vs_pytorch as B;"
        "torch.set_num_threads(%d);base=B.rss_mb('VmRSS:');"
        "r=B.torch_bench(%r,%r,'train');print(base, B.rss_mb('VmHWM:'))"
        % (os.path.dirname(os.path.abspath(__file__)), threads, cell, preset))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    base, peak = map(float, out.stdout.split())
    return peak - base


def main():
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cells", default="rnn,lstm,gru")
    ap.add_argument("--presets", default="seed,small,medium,large")
    ap.add_argument("--modes", default="infer,train")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--memory", action="store_true", help="also peak training memory (medium, large)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternations per workload; each side reports the median of its round medians "
                         "(the machine's speed drifts; alternating several times evens it out)")
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16", "int8"],
                    help="bf16 or int8: the reduced-precision table of tools/bench_precision.py "
                         "(rnn in that precision next to its peers, errors against f64)")
    args = ap.parse_args()
    if args.precision != "f32":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_precision
        presets = args.presets if args.presets != ap.get_default("presets") else "small,medium,large"
        sys.argv = [sys.argv[0], "--threads", str(args.threads), "--cells", args.cells,
                    "--presets", presets, "--modes", args.modes, "--rounds", str(args.rounds),
                    "--rnn-precision", args.precision] + (["--no-ort"] if args.no_ort else [])
        return bench_precision.main()
    if not os.path.exists(RNN_BIN):
        sys.exit("build first: cargo build --release -p rnn-cli")
    torch.set_num_threads(args.threads)
    ceiling = gemm_ceiling()
    isa = rnn_bench("rnn", "seed", "infer", args.threads).get("isa", "?")
    print(f"PyTorch {torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()}), "
          f"rnn kernels {isa}, {args.threads} threads; GEMM ceiling (2048^3 f32 in PyTorch): "
          f"{ceiling:.0f} GFLOP/s\n")
    print("| cell | preset | mode | PyTorch ms | rnn ms | ratio | ratio range | best-run ratio | rnn GFLOP/s | % of ceiling | ORT ms | ratio vs ORT |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cell in args.cells.split(","):
        for preset in args.presets.split(","):
            for mode in args.modes.split(","):
                t_ms, r_ms, o_ms, ratios = [], [], [], []
                t_best = r_best = float("inf")
                for _ in range(max(1, args.rounds)):
                    t, r = torch_bench(cell, preset, mode), rnn_bench(cell, preset, mode, args.threads)
                    t_ms.append(t["median_ms"])
                    r_ms.append(r["median_ms"])
                    t_best, r_best = min(t_best, t["min_ms"]), min(r_best, r["min_ms"])
                    ratios.append(t_ms[-1] / r_ms[-1])
                    if mode == "infer" and not args.no_ort:
                        try:
                            o_ms.append(ort_bench(cell, preset, args.threads)["median_ms"])
                        except Exception as e:  # noqa: BLE001 - report and go on
                            o_ms.append(f"n/a ({type(e).__name__})")
                tb, rb = statistics.median(t_ms), statistics.median(r_ms)
                ratio = tb / rb
                gf = flops(cell, preset, mode) / (rb * 1e-3) / 1e9
                ort_ms = ort_ratio = ""
                if o_ms and all(isinstance(v, float) for v in o_ms):
                    ob = statistics.median(o_ms)
                    ort_ms, ort_ratio = f"{ob:.3f}", f"{ob / rb:.2f}"
                elif o_ms:
                    ort_ms = next(v for v in o_ms if isinstance(v, str))
                print(f"| {cell} | {preset} | {mode} | {tb:.3f} | {rb:.3f} | {ratio:.2f} | "
                      f"{min(ratios):.2f}-{max(ratios):.2f} | {t_best / r_best:.2f} | {gf:.1f} | {100 * gf / ceiling:.0f}% | "
                      f"{ort_ms} | {ort_ratio} |", flush=True)
    ceiling_end = gemm_ceiling()
    print(f"\nGEMM ceiling measured again at the end: {ceiling_end:.0f} GFLOP/s "
          f"(the % column uses the first, {ceiling:.0f})")
    if args.memory:
        print("\n| cell | preset | PyTorch peak train MiB (growth) | rnn peak train MiB (growth) |")
        print("|---|---|---|---|")
        for cell in args.cells.split(","):
            for preset in ("medium", "large"):
                tm = torch_memory(cell, preset, args.threads)
                rb = rnn_bench(cell, preset, "train", args.threads)
                rm = rb["peak_rss_mb"] - rb["base_rss_mb"]
                print(f"| {cell} | {preset} | {tm:.0f} | {rm:.0f} |", flush=True)


if __name__ == "__main__":
    main()
