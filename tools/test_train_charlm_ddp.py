#!/usr/bin/env python3
"""Tools test (not part of `cargo test`): tools/train_charlm.py under torchrun, 2 processes.

Starts from an rnn model directory (`rnn train --steps 0`), trains a few steps with
DistributedDataParallel on the gloo backend, and checks that

  1. `rnn eval` on the written model directory and the script's own evaluation agree within
     1e-5 nats per character (the same validation text and chunk length);
  2. `rnn sample` reads the directory;
  3. the 2-process run ends with the weights of a 1-process run of the same steps (the streams
     are split across the ranks, the data order is the same): within 1e-4.

    OMP_NUM_THREADS=1 python tools/test_train_charlm_ddp.py

Uses $RNN (default target/release/rnn; build it with `cargo build --release -p rnn-cli`) and
the torchrun beside this Python.
"""

import json
import math
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RNN = os.environ.get("RNN", os.path.join(ROOT, "target", "release", "rnn"))
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
SCRIPT = os.path.join(HERE, "train_charlm.py")
CORPUS = os.path.join(ROOT, "crates", "rnn-cli", "assets", "shakespeare.txt")

SEQ_LEN, BATCH, STEPS, VAL_FRACTION = 32, 8, 6, 0.1


def run(cmd, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if p.returncode != 0:
        sys.exit(f"FAILED ({p.returncode}): {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p.stdout


def last_json(out):
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def main():
    if not os.path.exists(RNN):
        sys.exit(f"no rnn binary at {RNN}: `cargo build --release -p rnn-cli` or set $RNN")
    with tempfile.TemporaryDirectory(prefix="rnn-ddp-") as tmp:
        with open(CORPUS, encoding="utf-8") as f:
            text = f.read()[:30000]
        data = os.path.join(tmp, "text.txt")
        with open(data, "w", encoding="utf-8") as f:
            f.write(text)
        n_val = math.floor(len(text) * VAL_FRACTION)
        val = os.path.join(tmp, "val.txt")
        with open(val, "w", encoding="utf-8") as f:
            f.write(text[len(text) - n_val:])

        init = os.path.join(tmp, "init")
        run([RNN, "train", "--steps", "0", "--data", data, "--out", init, "--hidden", "32",
             "--embed", "16", "--seq-len", str(SEQ_LEN), "--batch", str(BATCH), "--seed", "3",
             "--sample-len", "0"])
        common = ["--data", data, "--init", init, "--steps", str(STEPS), "--batch", str(BATCH),
                  "--seq-len", str(SEQ_LEN), "--val-fraction", str(VAL_FRACTION),
                  "--log-every", "2", "--seed", "3"]
        ddp = os.path.join(tmp, "ddp")
        result = last_json(run([TORCHRUN, "--standalone", "--nproc_per_node", "2", SCRIPT,
                                "--out", ddp] + common))
        assert result["processes"] == 2, result
        one = os.path.join(tmp, "one")
        single = last_json(run([sys.executable, SCRIPT, "--out", one] + common))
        assert single["processes"] == 1, single

        ours = json.loads(run([RNN, "eval", "--model", ddp, "--data", val, "--seq-len",
                               str(SEQ_LEN), "--json"]))
        diff = abs(ours["loss"] - result["val_loss"])
        print(f"validation loss after {STEPS} steps on 2 processes: torch {result['val_loss']:.8f}, "
              f"rnn eval {ours['loss']:.8f}, difference {diff:.2e} nats/char")
        assert diff <= 1e-5, diff

        sample = run([RNN, "sample", "--model", ddp, "--len", "40", "--seed", "1"])
        assert len(sample) >= 40, sample

        a = load_file(os.path.join(ddp, "model.safetensors"))
        b = load_file(os.path.join(one, "model.safetensors"))
        start = load_file(os.path.join(init, "model.safetensors"))
        assert a.keys() == b.keys()
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        moved = max((a[k] - start[k]).abs().max().item() for k in a)
        print(f"2 processes vs 1: largest weight difference {worst:.2e} (the weights moved by up "
              f"to {moved:.2e}); validation {result['val_loss']:.8f} vs {single['val_loss']:.8f}")
        assert moved > 1e-3, moved
        assert worst <= 1e-4, worst
    print("ok")


if __name__ == "__main__":
    main()
