#!/usr/bin/env python3
"""The PyTorch twin of `rnn train`: the same character model, data split, batching, data order,
optimizer and step as crates/rnn/src/charlm/, so the two can be compared number for number.

    python tools/train_charlm.py --out runs/torch-charlm            # the defaults of `rnn train`
    rnn sample --model runs/torch-charlm                            # rnn reads its checkpoint
    rnn eval --model runs/torch-charlm --data some.txt

It writes the model directory that `rnn sample` and `rnn eval` read (model.safetensors with the
`config` metadata and PyTorch's keys embed.weight, rnn.weight_ih_l0, ..., fc.weight, fc.bias;
vocab.json; metrics.csv), and it reads rnn's: `--init DIR` starts from the weights of an rnn
model directory (`rnn train --steps 0 --out DIR` writes the initial weights of a seed), and
`--evaluate DIR` loads an rnn model with `load_state_dict` and prints its validation loss.

Needs torch, safetensors and numpy (tools/requirements.txt).
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
BUILTIN = os.path.join(HERE, "..", "crates", "rnn-cli", "assets", "shakespeare.txt")
MASK = (1 << 64) - 1
EPOCH_STRIDE = 0x9E3779B97F4A7C15
EVAL_MIN_STREAM = 256
EVAL_MAX_STREAMS = 64


# ---- rnn::Rng (xoshiro256** seeded by splitmix64), for the epoch offsets ----------------------


def rng_new(seed):
    x = seed & MASK
    s = []
    for _ in range(4):
        x = (x + 0x9E3779B97F4A7C15) & MASK
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        s.append(z ^ (z >> 31))
    return s


def rng_next_u64(s):
    rotl = lambda v, k: ((v << k) | (v >> (64 - k))) & MASK
    result = (rotl((s[1] * 5) & MASK, 7) * 9) & MASK
    t = (s[1] << 17) & MASK
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = rotl(s[3], 45)
    return result


def epoch_offset(seed, epoch, seq_len):
    """rnn::charlm::data::epoch_offset: Rng::new(seed + epoch * stride).below(seq_len)."""
    s = rng_new((seed + epoch * EPOCH_STRIDE) & MASK)
    return (rng_next_u64(s) * seq_len) >> 64


# ---- data ------------------------------------------------------------------------------------


class Streams:
    """rnn::charlm::data::Streams: `batch` contiguous streams read in chunks of `seq_len`."""

    def __init__(self, tokens, batch, seq_len, seed):
        need = batch * seq_len + seq_len
        if len(tokens) < need:
            sys.exit(f"error: the training text has {len(tokens)} characters, smaller than one "
                     f"batch ({need})")
        self.tokens, self.batch, self.seq_len, self.seed = tokens, batch, seq_len, seed
        self.stream_len = (len(tokens) - seq_len) // batch
        self.chunks = self.stream_len // seq_len

    def chunk(self, step):
        epoch, k = divmod(step, self.chunks)
        base = epoch_offset(self.seed, epoch, self.seq_len) + k * self.seq_len
        starts = base + torch.arange(self.batch) * self.stream_len          # (N,)
        idx = starts[None, :] + torch.arange(self.seq_len)[:, None]         # (L, N)
        return self.tokens[idx], self.tokens[idx + 1], epoch, k == 0


# ---- model -----------------------------------------------------------------------------------


class CharLM(nn.Module):
    """rnn::charlm::CharLm: embed (or one-hot) -> RNN/LSTM/GRU -> dropout -> Linear."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        v, e, h = cfg["vocab_size"], cfg["embed"], cfg["hidden_size"]
        if e > 0:
            self.embed = nn.Embedding(v, e)
        layer = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cfg["cell"]]
        self.rnn = layer(e if e > 0 else v, h, num_layers=cfg["num_layers"],
                         dropout=cfg["dropout"] if cfg["num_layers"] > 1 else 0.0)
        self.drop = nn.Dropout(cfg["dropout"])
        self.fc = nn.Linear(h, v)

    def forward(self, x, state=None):  # x: (L, N) int64
        if self.cfg["embed"] > 0:
            e = self.embed(x)
        else:
            e = nn.functional.one_hot(x, self.cfg["vocab_size"]).float()
        o, state = self.rnn(e, state)
        return self.fc(self.drop(o)).reshape(-1, self.cfg["vocab_size"]), state


def detach(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


@torch.no_grad()
def evaluate(model, tokens, seq_len):
    """rnn::charlm::evaluate: mean nats per character over min(64, (n-1)//256) streams."""
    was = model.training
    model.eval()
    n = len(tokens)
    streams = max(1, min(EVAL_MAX_STREAMS, (n - 1) // EVAL_MIN_STREAM))
    s = (n - 1) // streams
    starts = torch.arange(streams) * s
    state, total, start = None, 0.0, 0
    while start < s:
        l = min(seq_len, s - start)
        idx = starts[None, :] + start + torch.arange(l)[:, None]
        logits, state = model(tokens[idx], state)
        total += nn.functional.cross_entropy(logits, tokens[idx + 1].reshape(-1),
                                             reduction="sum").item()
        start += l
    model.train(was)
    return total / (streams * s)


# ---- files -----------------------------------------------------------------------------------


def save_model(model, path, step):
    meta = {"format": "rnn.charlm/1", "config": json.dumps(model.cfg), "step": str(step)}
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


def load_model(path):
    """An rnn (or PyTorch) model file: config from the metadata, weights by load_state_dict."""
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        sys.exit(f"error: {path}: no \"config\" metadata: not a character model")
    model = CharLM(json.loads(meta["config"]))
    model.load_state_dict(load_file(path), strict=True)
    return model


def read_vocab(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)["chars"]


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---- main ------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=BUILTIN)
    p.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=0, help="0 = only at the end")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--out", default="runs/torch-charlm")
    p.add_argument("--init", metavar="DIR", help="start from the weights of an rnn model dir")
    p.add_argument("--evaluate", metavar="DIR",
                   help="load an rnn model dir with load_state_dict, print its validation loss")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    with open(a.data, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    tokens = torch.tensor([index[c] for c in text], dtype=torch.int64)
    n_val = math.floor(len(tokens) * a.val_fraction)
    train, val = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val:]

    if a.evaluate:
        model = load_model(os.path.join(a.evaluate, "model.safetensors"))
        if read_vocab(os.path.join(a.evaluate, "vocab.json")) != chars:
            sys.exit("error: the model's vocabulary is not this text's")
        loss = evaluate(model, val, a.seq_len)
        print(f"loss={loss:.6f} bpc={loss / math.log(2):.6f}")
        return

    cfg = {"cell": a.cell, "vocab_size": len(chars), "embed": a.embed, "hidden_size": a.hidden,
           "num_layers": a.layers, "dropout": a.dropout}
    if a.init:
        model = load_model(os.path.join(a.init, "model.safetensors"))
        if model.cfg != cfg:
            sys.exit(f"error: --init {a.init} has config {model.cfg}, this run {cfg}")
    else:
        model = CharLM(cfg)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    streams = Streams(train, a.batch, a.seq_len, a.seed)
    os.makedirs(a.out, exist_ok=True)
    write_atomic(os.path.join(a.out, "vocab.json"), json.dumps({"chars": chars}))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {model}", file=sys.stderr)

    rows = ["step,epoch,train_loss,val_loss,chars_per_sec"]
    state, step_time, since, loss_sum, final_val = None, 0.0, 0, 0.0, None
    for step in range(a.steps):
        t0 = time.perf_counter()
        x, y, epoch, first = streams.chunk(step)
        if first:
            state = None
        opt.zero_grad()
        logits, state = model(x, state)
        loss = nn.functional.cross_entropy(logits, y.reshape(-1))
        loss.backward()
        if a.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        state = detach(state)
        dt = time.perf_counter() - t0
        step_time += dt
        loss_sum += loss.item()
        since += 1
        done = step + 1
        last = done == a.steps
        v = None
        if len(val) >= 2 and (last or (a.eval_every and done % a.eval_every == 0)):
            v = evaluate(model, val, a.seq_len)
            final_val = v
        if last or done % a.log_every == 0 or v is not None:
            cps = done * a.batch * a.seq_len / step_time
            rows.append(f"{done},{epoch},{loss_sum / since:.6f},{'' if v is None else f'{v:.6f}'},{cps:.0f}")
            vs = "" if v is None else f" val {v:.4f} ({v / math.log(2):.4f} bpc)"
            print(f"step {done}/{a.steps} loss {loss_sum / since:.4f}{vs} {cps:.0f} char/s",
                  file=sys.stderr)
            loss_sum, since = 0.0, 0
    save_model(model, os.path.join(a.out, "model.safetensors"), a.steps)
    write_atomic(os.path.join(a.out, "metrics.csv"), "\n".join(rows) + "\n")
    result = {"steps": a.steps, "train_chars_per_sec": a.steps * a.batch * a.seq_len / max(step_time, 1e-9),
              "train_seconds": step_time}
    if final_val is None and len(val) >= 2:
        final_val = evaluate(model, val, a.seq_len)
    if final_val is not None:
        result.update(val_loss=final_val, val_bpc=final_val / math.log(2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
