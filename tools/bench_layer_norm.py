#!/usr/bin/env python3
"""Speed of rnn's layer-normalised LSTM against what a PyTorch user writes today, and against
rnn's plain LSTM.

PyTorch has no layer-normalised LSTM layer (pytorch issue 6760); users write the cell as a loop
over time and compile it with `torch.jit.script`, the form of PyTorch's own fastrnns benchmark
(benchmarks/fastrnns/custom_lstms.py). The module here is that loop with the equations of rnn's
`"layer_norm": true` (Ba et al. 2016, as Haste's LayerNormLSTM; tools/fixtures/variants.py):

    gates = LN(x W_ih^T; g_ih) + LN(h W_hh^T; g_hh) + b_ih + b_hh
    c' = f c + i g,   h' = o tanh(LN(c'; g_c, beta_c))

Per workload and mode the three runs alternate `--rounds` times (TorchScript, `rnn bench
--layer-norm`, `rnn bench`), each reporting the median of its round medians; same thread count,
one layer, batch-first, f32. `train` is forward, loss = sum of outputs, backward to every weight
and the input. Prints a Markdown table: TorchScript / rnn LN (> 1: rnn is faster) and rnn LN /
rnn LSTM (the cost of the layer norms), each the median of the rounds' own ratios with their
range.

Usage:
    cargo build --release -p rnn-cli
    python tools/bench_layer_norm.py [--threads 2] [--presets medium]
        [--modes infer,train] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import subprocess
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench_vs_pytorch import PRESETS, RNN_BIN, settle, timed


class LayerNormLSTM(nn.Module):
    """One layer, batch-first: the TorchScript loop over time of the layer-normalised cell."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        k = hidden_size ** -0.5
        u = lambda *s: nn.Parameter(torch.empty(*s).uniform_(-k, k))  # noqa: E731
        self.hidden_size = hidden_size
        self.weight_ih = u(4 * hidden_size, input_size)
        self.weight_hh = u(4 * hidden_size, hidden_size)
        self.bias_ih = u(4 * hidden_size)
        self.bias_hh = u(4 * hidden_size)
        self.ln_ih_weight = nn.Parameter(torch.ones(4 * hidden_size))
        self.ln_hh_weight = nn.Parameter(torch.ones(4 * hidden_size))
        self.ln_c_weight = nn.Parameter(torch.ones(hidden_size))
        self.ln_c_bias = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        n = x.size(0)
        h = torch.zeros(n, self.hidden_size, dtype=x.dtype)
        c = torch.zeros(n, self.hidden_size, dtype=x.dtype)
        g4 = [4 * self.hidden_size]
        outs: List[Tensor] = []
        # The input product for all steps at once, as fastrnns' script loops do.
        xw = torch.matmul(x, self.weight_ih.t())
        for t in range(x.size(1)):
            gates = (F.layer_norm(xw[:, t], g4, self.ln_ih_weight, None, 1e-5)
                     + F.layer_norm(torch.mm(h, self.weight_hh.t()), g4, self.ln_hh_weight,
                                    None, 1e-5)
                     + self.bias_ih + self.bias_hh)
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            cn = F.layer_norm(c, [self.hidden_size], self.ln_c_weight, self.ln_c_bias, 1e-5)
            h = torch.sigmoid(o) * torch.tanh(cn)
            outs.append(h)
        return torch.stack(outs, 1), (h, c)


def script_bench(preset, mode):
    b, t, i, h = PRESETS[preset]
    torch.manual_seed(0)
    m = torch.jit.script(LayerNormLSTM(i, h))
    x = torch.rand(b, t, i) * 2 - 1
    if mode == "infer":
        def fn():
            with torch.no_grad():
                m(x)
    else:
        def fn():
            m.zero_grad(set_to_none=True)
            xr = x.clone().requires_grad_(True)
            out, _ = m(xr)
            out.sum().backward()
    return timed(fn)


def rnn_bench(preset, mode, threads, layer_norm):
    b, t, i, h = PRESETS[preset]
    cmd = [RNN_BIN, "bench", "--cell", "lstm", "--batch", str(b), "--seq", str(t),
           "--input", str(i), "--hidden", str(h), "--mode", mode, "--threads", str(threads),
           "--json"] + (["--layer-norm"] if layer_norm else [])
    settle()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="medium")
    ap.add_argument("--modes", default="infer,train")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| preset | mode | TorchScript LN ms | rnn LN ms | rnn LSTM ms | TorchScript / rnn LN "
          "| rnn LN / rnn LSTM |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        for mode in args.modes.split(","):
            ts, ln, plain = [], [], []
            for _ in range(args.rounds):
                ts.append(script_bench(preset, mode)["median_ms"])
                ln.append(rnn_bench(preset, mode, args.threads, True)["median_ms"])
                plain.append(rnn_bench(preset, mode, args.threads, False)["median_ms"])
            med = statistics.median
            # Ratios within each round (the three ran back to back), then their median and
            # range: a host that slows down for a while moves both sides of a round.
            vs_script = [a / b for a, b in zip(ts, ln)]
            vs_plain = [a / b for a, b in zip(ln, plain)]
            print(f"| {preset} | {mode} | {med(ts):.1f} | {med(ln):.1f} | {med(plain):.1f} "
                  f"| {med(vs_script):.2f} ({min(vs_script):.2f}..{max(vs_script):.2f}) "
                  f"| {med(vs_plain):.2f} ({min(vs_plain):.2f}..{max(vs_plain):.2f}) |",
                  flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
