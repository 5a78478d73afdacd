#!/usr/bin/env python3
"""Reduced-precision peers side by side with `rnn bench`: speed and error against f64.

Peers (one layer, unidirectional, batch-first, the same weights and input for every peer of a
workload; the protocol of bench_vs_pytorch.py: warm-up, then repetitions until 5 runs and 1
second, the median; every workload alternates between the columns `--rounds` times and each
column reports the median of its round medians; with `--rnn-precision`, a second table gives
each peer's per-round ratio to rnn in that precision, median and range):

* `torch f32`: the module in f32 (the baseline the others are compared with);
* `torch bf16`: `module.to(torch.bfloat16)`, input in bf16 (PyTorch keeps h and c in bf16);
* `autocast`: the f32 module under `torch.autocast("cpu", dtype=torch.bfloat16)`;
* `OV bf16`: OpenVINO with `INFERENCE_PRECISION_HINT=bf16` (inference only; the precision
  OpenVINO actually runs is printed in the header: a CPU whose `cpuid` lacks AVX512_BF16 or
  AMX runs f32 whatever the hint);
* `ORT int8`: ONNX Runtime after `onnxruntime.quantization.quantize_dynamic` (QInt8 weights;
  inference only; it quantizes LSTM only, GRU and RNN stay f32: marked `(f32)`);
* `rnn f32` (and `rnn PREC` with `--rnn-precision bf16|int8`): the time of `rnn bench` (its
  own weights of the same shapes), the error of `rnn run --precision P` on the module's own
  weights (saved as an rnn model file) and input.

Each peer's "err" is the largest absolute difference of its output from the f64 run of the
same module on the same input (`module.double()`). Training rows time forward, loss = sum of
outputs, backward to every weight and the input; their error is the forward output's.

Usage (in a virtual environment with tools/requirements.txt: torch, onnx, onnxruntime, openvino):
    cargo build --release -p rnn-cli
    python tools/bench_precision.py [--threads 2] [--cells lstm,gru,rnn]
        [--presets small,medium,large] [--modes infer,train] [--rounds 3] [--no-ov] [--no-ort]
        [--errors-only]
"""
import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_vs_pytorch as B  # noqa: E402  (PRESETS, timed, make_module, rnn_bench)


def max_err(out, ref):
    return (out.detach().double() - ref).abs().max().item()


def workload(cell, preset):
    """The module (f32), its input and the f64 reference output."""
    b, t, i, h = B.PRESETS[preset]
    torch.manual_seed(0)
    m = B.make_module(cell, i, h)
    x = torch.rand(b, t, i) * 2 - 1
    with torch.inference_mode():
        ref = copy.deepcopy(m).double()(x.double())[0]
    return m, x, ref


def torch_peer(m, x, ref, mode, kind):
    """(timing, error) of PyTorch: kind is f32, bf16 or autocast."""
    if kind == "bf16":
        m, x = copy.deepcopy(m).to(torch.bfloat16), x.to(torch.bfloat16)

    def forward(xr):
        if kind == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return m(xr)[0]
        return m(xr)[0]

    with torch.inference_mode():
        err = max_err(forward(x), ref)
    if mode == "infer":
        def fn():
            with torch.inference_mode():
                forward(x)
    else:
        def fn():
            m.zero_grad(set_to_none=True)
            xr = x.clone().requires_grad_(True)
            forward(xr).float().sum().backward()
    return B.timed(fn), err


def export_onnx(m, x, path):
    try:
        torch.onnx.export(m, (x,), path, input_names=["x"], dynamo=False)
    except TypeError:
        torch.onnx.export(m, (x,), path, input_names=["x"])


def ort_int8_peer(cell, m, x, ref, threads):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with tempfile.TemporaryDirectory() as d:
        path, qpath = os.path.join(d, "m.onnx"), os.path.join(d, "m.int8.onnx")
        export_onnx(m, x, path)
        quantize_dynamic(path, qpath, weight_type=QuantType.QInt8)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(qpath, so, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        out = torch.from_numpy(sess.run(None, feed)[0])
        err = max_err(out, ref)
        return B.timed(lambda: sess.run(None, feed)), err


def ov_peer(m, x, ref, threads, precision):
    import openvino as ov
    core = ov.Core()
    model = ov.convert_model(copy.deepcopy(m), example_input=x)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                 "INFERENCE_NUM_THREADS": str(threads)})
    req = compiled.create_infer_request()
    xn = x.numpy()
    out = torch.from_numpy(req.infer({0: xn})[compiled.output(0)].copy())
    err = max_err(out, ref)
    return B.timed(lambda: req.infer({0: xn})), err, str(compiled.get_property("INFERENCE_PRECISION_HINT"))


# Set by --errors-only: no timing, so no `rnn bench` runs.
ERRORS_ONLY = False


def rnn_peer(cell, preset, mode, threads, precision):
    if precision == "f32" or ERRORS_ONLY:
        return B.rnn_bench(cell, preset, mode, threads)
    b, t, i, h = B.PRESETS[preset]
    B.settle()
    out = subprocess.run([B.RNN_BIN, "bench", "--cell", cell, "--batch", str(b), "--seq", str(t),
                          "--input", str(i), "--hidden", str(h), "--mode", mode,
                          "--threads", str(threads), "--precision", precision, "--json"],
                         check=True, capture_output=True, text=True)
    import json
    return json.loads(out.stdout.strip().splitlines()[-1])


def rnn_error(cell, m, x, ref, threads, precision):
    """rnn's largest absolute error against f64 on the module's own weights: the module saved as
    an rnn model file (state_dict + config), `rnn run --precision P` on the same input."""
    import json
    from safetensors.torch import load_file, save_file
    config = {"cell": cell, "input_size": m.input_size, "hidden_size": m.hidden_size,
              "batch_first": True}
    with tempfile.TemporaryDirectory() as d:
        model, inp, out = (os.path.join(d, f) for f in ("m.safetensors", "x.safetensors", "y.safetensors"))
        save_file({k: v.detach().float().contiguous() for k, v in m.state_dict().items()}, model,
                  metadata={"config": json.dumps(config)})
        save_file({"input": x.contiguous()}, inp)
        subprocess.run([B.RNN_BIN, "run", "--model", model, "--input", inp, "--output", out,
                        "--threads", str(threads)] + (["--precision", precision] if precision != "f32" else []),
                       check=True, capture_output=True, text=True)
        return max_err(load_file(out)["output"], ref)


def dump(args):
    """Writes the workloads' weights, time-major input and f64 output as safetensors."""
    from safetensors.torch import save_file
    os.makedirs(args.dump, exist_ok=True)
    for cell in args.cells.split(","):
        for preset in args.presets.split(","):
            m, x, ref = workload(cell, preset)
            b, t, i, h = B.PRESETS[preset]
            tensors = {k: v.detach().contiguous() for k, v in m.state_dict().items()}
            tensors["x"] = x.transpose(0, 1).reshape(t * b, i).contiguous()
            tensors["ref"] = ref.transpose(0, 1).reshape(t * b, h).contiguous()
            path = os.path.join(args.dump, f"{cell}_{preset}.safetensors")
            save_file(tensors, path)
            print(path)


def main():
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cells", default="lstm,gru,rnn")
    ap.add_argument("--presets", default="small,medium,large")
    ap.add_argument("--modes", default="infer,train")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-ov", action="store_true")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--errors-only", action="store_true",
                    help="one run per peer, errors only (no timing, no rnn column): fast")
    ap.add_argument("--dump", default="",
                    help="write each workload's weights, input and f64 output to DIR/CELL_PRESET.safetensors "
                         "(for `cargo bench -p rnn --bench precision -- layers DIR`: rnn's errors on the "
                         "same weights) and stop")
    ap.add_argument("--rnn-precision", default="",
                    help="also time `rnn bench --precision P` (bf16 or int8) next to rnn f32")
    args = ap.parse_args()
    if not os.path.exists(B.RNN_BIN):
        sys.exit("build first: cargo build --release -p rnn-cli")
    torch.set_num_threads(args.threads)
    if args.errors_only:
        global ERRORS_ONLY
        ERRORS_ONLY = True
        args.rounds = 1
        B.timed = lambda fn, **kw: (fn(), {"median_ms": float("nan")})[1]
        B.rnn_bench = lambda *a: {"median_ms": float("nan")}
    if args.dump:
        dump(args)
        return
    header = (f"PyTorch {torch.__version__} (CPU capability "
              f"{torch.backends.cpu.get_cpu_capability()}), {args.threads} threads")
    if not args.no_ov:
        import openvino as ov
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        header += f"; OpenVINO {ov.__version__} (CPU capabilities {', '.join(caps)})"
    print(header + "\n")
    cols = ["torch f32", "torch bf16", "autocast", "OV bf16", "ORT int8", "rnn f32"]
    if args.rnn_precision:
        cols.append(f"rnn {args.rnn_precision}")
    print("| cell | preset | mode | " + " | ".join(f"{c} ms | err" for c in cols) + " |")
    print("|---|---|---|" + "---|---|" * len(cols))
    ov_precision = set()
    ratio_rows = []
    for cell in args.cells.split(","):
        for preset in args.presets.split(","):
            m, x, ref = workload(cell, preset)
            for mode in args.modes.split(","):
                times = {c: [] for c in cols}
                errs = {}
                for _ in range(max(1, args.rounds)):
                    for kind, col in (("f32", "torch f32"), ("bf16", "torch bf16"), ("autocast", "autocast")):
                        t, e = torch_peer(m, x, ref, mode, kind)
                        times[col].append(t["median_ms"])
                        errs[col] = e
                    if mode == "infer" and not args.no_ov:
                        t, e, p = ov_peer(m, x, ref, args.threads, "bf16")
                        times["OV bf16"].append(t["median_ms"])
                        errs["OV bf16"] = e
                        ov_precision.add(p)
                    if mode == "infer" and not args.no_ort:
                        t, e = ort_int8_peer(cell, m, x, ref, args.threads)
                        times["ORT int8"].append(t["median_ms"])
                        errs["ORT int8"] = e
                    times["rnn f32"].append(rnn_peer(cell, preset, mode, args.threads, "f32")["median_ms"])
                    if args.rnn_precision:
                        col = f"rnn {args.rnn_precision}"
                        times[col].append(rnn_peer(cell, preset, mode, args.threads,
                                                   args.rnn_precision)["median_ms"])
                        if col not in errs:
                            errs[col] = rnn_error(cell, m, x, ref, args.threads, args.rnn_precision)
                if "rnn f32" not in errs:
                    errs["rnn f32"] = rnn_error(cell, m, x, ref, args.threads, "f32")
                cells_out = []
                for c in cols:
                    if not times[c]:
                        cells_out.append(" | ")
                        continue
                    ms = statistics.median(times[c])
                    err = f"{errs[c]:.1e}" if c in errs else "-"
                    if c == "ORT int8" and cell != "lstm":
                        err += " (f32)"
                    cells_out.append(f"{ms:.3f} | {err}")
                print(f"| {cell} | {preset} | {mode} | " + " | ".join(cells_out) + " |", flush=True)
                if args.rnn_precision:
                    ours = times[f"rnn {args.rnn_precision}"]
                    for c in cols[:-1]:
                        if len(times[c]) == len(ours):
                            r = [p / o for p, o in zip(times[c], ours)]
                            ratio_rows.append(f"| {cell} | {preset} | {mode} | {c} | "
                                              f"{statistics.median(r):.2f} | {min(r):.2f}-{max(r):.2f} |")
    if ratio_rows:
        print(f"\nPer-round ratios, peer time / rnn {args.rnn_precision} time (> 1: rnn is faster; "
              "median and range over the rounds):\n")
        print("| cell | preset | mode | peer | ratio | range |\n|---|---|---|---|---|---|")
        print("\n".join(ratio_rows))
    if ov_precision:
        print(f"\nOpenVINO's inference precision as compiled: {', '.join(sorted(ov_precision))}")


if __name__ == "__main__":
    main()
