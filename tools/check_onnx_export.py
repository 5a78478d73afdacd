"""Checks `rnn export` against ONNX Runtime.

1. Recurrent model files: a matrix of nn.RNN / nn.LSTM / nn.GRU configurations (num_layers 1-2,
   bidirectional, batch_first, bias, relu, with and without h0; LSTM peepholes and the GRU's
   linear_before_reset = 0 on the bidirectional ones) is saved as rnn model files;
   each is run with `rnn run` and exported with `rnn export`, and the ONNX file is run in ONNX
   Runtime on the same input (zero states where rnn run had none). output, h_n and c_n must
   agree within 1e-5. proj_size must be refused.
2. Character models (an LSTM with an embedding, a one-hot GRU): `rnn train --steps 50` on the
   built-in corpus, `rnn export DIR`, then
   greedy decoding stepped one character at a time in ONNX Runtime (states carried through
   h0/c0 -> h_n/c_n) must print the same 500 characters as `rnn sample --temperature 0`.

Run from the repository root after `cargo build --release`:

    python tools/check_onnx_export.py [--rnn target/release/rnn] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

TOL = 1e-5
T, N, I, H = 7, 3, 5, 6


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr}")
    return r.stdout


def model_files(tmp: Path):
    """(name, model path, input path, lstm?) for a configuration matrix."""
    torch.manual_seed(0)
    cases = []
    k = 0
    for cell in ["rnn", "lstm", "gru"]:
        for layers in [1, 2]:
            for bi in [False, True]:
                for bf in [False, True]:
                    k += 1
                    relu = cell == "rnn" and k % 2 == 0
                    bias = k % 3 != 0
                    h0 = k % 2 == 1
                    cfg = {"cell": cell, "input_size": I, "hidden_size": H, "num_layers": layers,
                           "nonlinearity": "relu" if relu else "tanh", "bias": bias,
                           "batch_first": bf, "bidirectional": bi}
                    kw = dict(num_layers=layers, bidirectional=bi, batch_first=bf, bias=bias)
                    if cell == "rnn":
                        m = torch.nn.RNN(I, H, nonlinearity="relu" if relu else "tanh", **kw)
                    else:
                        m = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H, **kw)
                    name = f"{cell}_l{layers}{'_bi' if bi else ''}{'_bf' if bf else ''}{'' if bias else '_nobias'}{'_relu' if relu else ''}{'_h0' if h0 else ''}"
                    sd = dict(m.state_dict())
                    # The variants on the bidirectional half: LSTM peepholes (ONNX's P), GRU with
                    # the reset gate before the product (linear_before_reset = 0).
                    if cell == "lstm" and bi:
                        cfg["peephole"] = True
                        name += "_peephole"
                        for layer in range(layers):
                            for sfx in ["", "_reverse"]:
                                sd[f"weight_ph_l{layer}{sfx}"] = 0.5 * torch.randn(3 * H)
                    if cell == "gru" and bi:
                        cfg["linear_before_reset"] = False
                        name += "_reset_before"
                    mp, ip = tmp / f"{name}.model.safetensors", tmp / f"{name}.input.safetensors"
                    save_file({k: v.contiguous() for k, v in sd.items()}, str(mp),
                              metadata={"config": json.dumps(cfg)})
                    d = 2 if bi else 1
                    x = torch.randn(N, T, I) if bf else torch.randn(T, N, I)
                    inputs = {"input": x}
                    if h0:
                        inputs["h0"] = torch.randn(layers * d, N, H)
                        if cell == "lstm":
                            inputs["c0"] = torch.randn(layers * d, N, H)
                    save_file(inputs, str(ip))
                    cases.append((name, mp, ip, cell == "lstm"))
    return cases


def check_models(rnn: str, tmp: Path) -> float:
    worst = 0.0
    for name, mp, ip, lstm in model_files(tmp):
        onnx_path = tmp / f"{name}.onnx"
        out_path = tmp / f"{name}.out.safetensors"
        run([rnn, "run", "--model", mp, "--input", ip, "--output", out_path])
        run([rnn, "export", mp, "--onnx", onnx_path, "--force"])
        want = load_file(str(out_path))
        inputs = load_file(str(ip))
        rows = want["h_n"].shape
        feeds = {"input": inputs["input"], "h0": inputs.get("h0", np.zeros(rows, np.float32))}
        if lstm:
            feeds["c0"] = inputs.get("c0", np.zeros(rows, np.float32))
        got = dict(zip([o.name for o in session(onnx_path).get_outputs()],
                       session(onnx_path).run(None, feeds)))
        errs = {k: float(np.abs(got[k] - want[k]).max()) for k in want}
        e = max(errs.values())
        worst = max(worst, e)
        status = "ok" if e <= TOL else "FAIL"
        print(f"  {name:34s} max |ORT - rnn run| = {e:.1e}  {status}")
        if e > TOL:
            raise SystemExit(f"{name}: {errs}")
    # proj_size has no ONNX form.
    m = torch.nn.LSTM(I, H, proj_size=2)
    mp = tmp / "proj.model.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(mp),
              metadata={"config": json.dumps({"cell": "lstm", "input_size": I, "hidden_size": H, "proj_size": 2})})
    r = subprocess.run([rnn, "export", mp, "--onnx", tmp / "proj.onnx"], capture_output=True, text=True)
    assert r.returncode == 1 and "proj_size" in r.stderr, r.stderr
    print(f"  proj_size refused: {r.stderr.strip()}")
    return worst


def check_charlm(rnn: str, tmp: Path, cell: str, embed: int, length: int = 500) -> None:
    d = tmp / f"charlm_{cell}_{embed}"
    run([rnn, "train", "--steps", "50", "--hidden", "64", "--layers", "2", "--out", d,
         "--cell", cell, "--embed", str(embed),
         "--sample-every", "0", "--eval-every", "0", "--force", "--threads", "1"])
    onnx_path = tmp / f"charlm_{cell}_{embed}.onnx"
    run([rnn, "export", d, "--onnx", onnx_path, "--force"])
    want = run([rnn, "sample", "--model", d, "--temperature", "0", "--len", str(length), "--seed", "0"])
    sess = session(onnx_path)
    meta = sess.get_modelmeta().custom_metadata_map
    chars = json.loads(meta["rnn.vocab"])["chars"]
    cfg = json.loads(meta["rnn.charlm.config"])
    lstm = cfg["cell"] == "lstm"
    index = {c: i for i, c in enumerate(chars)}
    shape = (cfg["num_layers"], 1, cfg["hidden_size"])
    state = {"h0": np.zeros(shape, np.float32)}
    if lstm:
        state["c0"] = np.zeros(shape, np.float32)
    token = index.get("\n", 0)
    text = []
    for _ in range(length + 1):
        out = dict(zip([o.name for o in sess.get_outputs()],
                       sess.run(None, {"tokens": np.array([[token]], np.int64), **state})))
        state["h0"] = out["h_n"]
        if lstm:
            state["c0"] = out["c_n"]
        token = int(np.argmax(out["logits"][-1, 0]))
        text.append(chars[token])
    got = "".join(text[:length])
    want = want[:-1] if want.endswith("\n") else want
    same = got == want
    print(f"  {cfg['cell']} {cfg['num_layers']}x{cfg['hidden_size']}, embed {cfg['embed']}, vocab {len(chars)}: "
          f"{length} greedy characters from ONNX Runtime {'equal' if same else 'DIFFER FROM'} rnn sample --temperature 0")
    if not same:
        first = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
        raise SystemExit(f"first difference at {first}: {got[first:first+40]!r} vs {want[first:first+40]!r}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rnn", default="target/release/rnn")
    p.add_argument("--keep", help="directory to keep the files in")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(a.keep or t)
        tmp.mkdir(parents=True, exist_ok=True)
        print(f"onnxruntime {ort.__version__}, torch {torch.__version__}")
        print("recurrent model files:")
        worst = check_models(a.rnn, tmp)
        print(f"  worst {worst:.2e} (tolerance {TOL})")
        print("character models:")
        check_charlm(a.rnn, tmp, "lstm", 64)
        check_charlm(a.rnn, tmp, "gru", 0)  # one-hot: Gather of an identity matrix
    print("all checks passed")


if __name__ == "__main__":
    sys.exit(main())
