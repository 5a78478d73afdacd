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

Distributed (PyTorch's DistributedDataParallel, the gloo backend, processes on CPU): under
`torchrun` the batch's streams are split across the processes (rank r of W takes streams
r*N/W .. (r+1)*N/W - 1 of every chunk: the same data order rule as one process), the gradients
are averaged across them, and rank 0 evaluates and writes the model directory. The result is
the single-process run's, up to the order of floating-point sums.

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 tools/train_charlm.py --init runs/charlm --out runs/ddp
    # on several machines: the same command on each, with its --node_rank
    torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 --master_addr host0 --master_port 29500 \
        tools/train_charlm.py --data book.txt --init runs/start --out runs/big

Needs torch, safetensors and numpy (tools/requirements.txt).
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist
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


def distributed():
    """(rank, world size), starting the gloo process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


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
    # The architecture: these defaults, or the --init model's.
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"], help="default lstm")
    p.add_argument("--hidden", type=int, help="default 256")
    p.add_argument("--layers", type=int, help="default 1")
    p.add_argument("--dropout", type=float, help="default 0")
    p.add_argument("--embed", type=int, help="default 64")
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
    rank, world = (0, 1) if a.evaluate else distributed()
    if a.batch % world:
        sys.exit(f"error: --batch {a.batch} streams cannot be split evenly across {world} processes")

    with open(a.data, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    model_dir = a.evaluate or a.init
    if model_dir:
        # An rnn model keeps its vocabulary (as `rnn train --init` and `rnn eval` do): the text
        # may use only characters the model knows.
        known = read_vocab(os.path.join(model_dir, "vocab.json"))
        unseen = sorted(set(chars) - set(known))
        if unseen:
            flag = "--evaluate" if a.evaluate else "--init"
            sys.exit(f"error: {flag} {model_dir}: the text has characters the model was not "
                     f"trained with: {unseen[:10]}")
        chars = known
    index = {c: i for i, c in enumerate(chars)}
    tokens = torch.tensor([index[c] for c in text], dtype=torch.int64)
    n_val = math.floor(len(tokens) * a.val_fraction)
    train, val = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val:]

    if a.evaluate:
        model = load_model(os.path.join(a.evaluate, "model.safetensors"))
        loss = evaluate(model, val, a.seq_len)
        print(f"loss={loss:.6f} bpc={loss / math.log(2):.6f}")
        return

    given = {"cell": a.cell, "embed": a.embed, "hidden_size": a.hidden, "num_layers": a.layers,
             "dropout": a.dropout}
    if a.init:
        model = load_model(os.path.join(a.init, "model.safetensors"))
        for k, v in given.items():
            if v is not None and v != model.cfg[k]:
                sys.exit(f"error: --init {a.init}: {k} {v} differs from the model's "
                         f"{model.cfg[k]}; fine-tuning keeps the model's architecture")
        if model.cfg["vocab_size"] != len(chars):
            sys.exit(f"error: --init {a.init}: vocab.json has {len(chars)} characters, the model "
                     f"{model.cfg['vocab_size']}")
    else:
        defaults = {"cell": "lstm", "embed": 64, "hidden_size": 256, "num_layers": 1,
                    "dropout": 0.0}
        cfg = {k: defaults[k] if v is None else v for k, v in given.items()}
        cfg = {"cell": cfg["cell"], "vocab_size": len(chars), "embed": cfg["embed"],
               "hidden_size": cfg["hidden_size"], "num_layers": cfg["num_layers"],
               "dropout": cfg["dropout"]}
        model = CharLM(cfg)
    model.train()
    # Under torchrun, DDP averages the gradients across the processes (and broadcasts rank 0's
    # weights first); `net` is what is trained, `model` what is evaluated and saved.
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    streams = Streams(train, a.batch, a.seq_len, a.seed)
    mine = slice(rank * a.batch // world, (rank + 1) * a.batch // world)
    if rank == 0:
        os.makedirs(a.out, exist_ok=True)
        write_atomic(os.path.join(a.out, "vocab.json"), json.dumps({"chars": chars}))
        print(f"torch {torch.__version__}, {world} process(es) x {torch.get_num_threads()} "
              f"thread(s); {model}", file=sys.stderr)

    rows = ["step,epoch,train_bpc,val_bpc,chars_per_sec,train_nats,val_nats"]
    state, step_time, since, loss_sum, final_val = None, 0.0, 0, 0.0, None
    for step in range(a.steps):
        t0 = time.perf_counter()
        x, y, epoch, first = streams.chunk(step)
        x, y = x[:, mine].contiguous(), y[:, mine].contiguous()  # this process's streams
        if first:
            state = None
        opt.zero_grad()
        logits, state = net(x, state)
        loss = nn.functional.cross_entropy(logits, y.reshape(-1))
        loss.backward()  # under DDP: the mean gradient over all processes, as one process's
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
            v = evaluate(model, val, a.seq_len) if rank == 0 else None
            final_val = v
        if last or done % a.log_every == 0 or (len(val) >= 2 and a.eval_every
                                               and done % a.eval_every == 0):
            mean = loss_sum / since
            if world > 1:  # the mean over every process's streams
                t = torch.tensor([mean], dtype=torch.float64)
                dist.all_reduce(t)
                mean = t.item() / world
            cps = done * a.batch * a.seq_len / step_time
            if rank == 0:
                ln2 = math.log(2)
                vb, vn = ("", "") if v is None else (f"{v / ln2:.6f}", f"{v:.8f}")
                rows.append(f"{done},{epoch},{mean / ln2:.6f},{vb},{cps:.0f},{mean:.8f},{vn}")
                vs = "" if v is None else f" val {v / ln2:.4f}"
                print(f"step {done}/{a.steps} train {mean / ln2:.4f}{vs} bpc {cps:.0f} char/s",
                      file=sys.stderr)
            loss_sum, since = 0.0, 0
    if rank != 0:
        dist.barrier()  # rank 0 writes and evaluates
        dist.destroy_process_group()
        return
    save_model(model, os.path.join(a.out, "model.safetensors"), a.steps)
    write_atomic(os.path.join(a.out, "metrics.csv"), "\n".join(rows) + "\n")
    result = {"steps": a.steps, "train_chars_per_sec": a.steps * a.batch * a.seq_len / max(step_time, 1e-9),
              "train_seconds": step_time}
    if final_val is None and len(val) >= 2:
        final_val = evaluate(model, val, a.seq_len)
    if final_val is not None:
        result.update(val_loss=final_val, val_bpc=final_val / math.log(2))
    result["processes"] = world
    print(json.dumps(result))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
