"""Data-parallel training with gradients averaged by dmsc, checked against one process.

    python -m dmsc.run -n 4 examples/python/ddp_train.py            # numpy MLP
    python -m dmsc.run -n 2 examples/python/ddp_train.py --torch    # torch CPU, if installed

Every rank builds the same synthetic regression data set and the same initial model. Each
step, every rank computes the gradient of the mean squared error on its own shard of the
global batch; dmsc averages the gradients (``ReduceOp.AVG``), so every rank applies the
full-batch gradient. As in PyTorch's DDP, gradients go out in buckets while backpropagation
goes on: the output layer's bucket is all-reduced with ``async_op=True`` while the hidden
layer's gradient is computed.

At the end the script checks, and asserts, that
  * the weights are bitwise identical on every rank (an all_gather of the flat weights), and
  * they match training in a single process on the full batch, within float tolerance
    (the script runs that reference itself).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import dmsc


def make_data(n: int, d_in: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in))
    w_true = rng.standard_normal((d_in, 1))
    y = np.tanh(x @ w_true) + 0.1 * rng.standard_normal((n, 1))
    return x, y


# ---------------------------------------------------------------------------- numpy model


class NumpyMLP:
    """y = W2 tanh(W1 x + b1) + b2, all parameters in one flat float64 buffer."""

    def __init__(self, d_in: int, hidden: int, seed: int):
        shapes = {"w1": (d_in, hidden), "b1": (hidden,), "w2": (hidden, 1), "b2": (1,)}
        sizes = {k: int(np.prod(s)) for k, s in shapes.items()}
        self.flat = np.zeros(sum(sizes.values()))
        self.grad = np.zeros_like(self.flat)
        self.p, self.g, off = {}, {}, 0
        for k, s in shapes.items():
            self.p[k] = self.flat[off:off + sizes[k]].reshape(s)
            self.g[k] = self.grad[off:off + sizes[k]].reshape(s)
            off += sizes[k]
        # Buckets in the order backpropagation fills them: output layer first.
        n1 = sizes["w1"] + sizes["b1"]
        self.buckets = [self.grad[n1:], self.grad[:n1]]
        rng = np.random.default_rng(seed)
        self.p["w1"][...] = rng.standard_normal(shapes["w1"]) / np.sqrt(d_in)
        self.p["w2"][...] = rng.standard_normal(shapes["w2"]) / np.sqrt(hidden)

    def step(self, x, y, lr: float, comm=None) -> float:
        """One SGD step on (x, y); with `comm`, gradients are averaged over the ranks."""
        h = np.tanh(x @ self.p["w1"] + self.p["b1"])
        pred = h @ self.p["w2"] + self.p["b2"]
        err = pred - y
        loss = float(np.mean(err ** 2))
        dpred = 2.0 * err / len(x)
        self.g["w2"][...] = h.T @ dpred
        self.g["b2"][...] = dpred.sum(axis=0)
        work = None
        if comm is not None:  # output-layer bucket goes out while we keep backpropagating
            work = comm.all_reduce(self.buckets[0], dmsc.ReduceOp.AVG, async_op=True)
        dh = (dpred @ self.p["w2"].T) * (1.0 - h ** 2)
        self.g["w1"][...] = x.T @ dh
        self.g["b1"][...] = dh.sum(axis=0)
        if comm is not None and work is not None:
            comm.all_reduce(self.buckets[1], dmsc.ReduceOp.AVG)
            work.wait()
        self.flat -= lr * self.grad
        return loss


def train_numpy(args, comm, x, y):
    model = NumpyMLP(args.d_in, args.hidden, args.seed)
    ref = NumpyMLP(args.d_in, args.hidden, args.seed)
    n, r = comm.size, comm.rank
    shard = args.batch // n
    loss = ref_loss = 0.0
    for step in range(args.steps):
        lo = (step * args.batch) % len(x)
        xb, yb = x[lo:lo + args.batch], y[lo:lo + args.batch]
        loss = model.step(xb[r * shard:(r + 1) * shard], yb[r * shard:(r + 1) * shard], args.lr, comm)
        ref_loss = ref.step(xb, yb, args.lr)  # single process, full batch
    return model.flat, ref.flat, loss, ref_loss, 1e-9


# ---------------------------------------------------------------------------- torch model


def train_torch(args, comm, x, y):
    import torch

    torch.set_num_threads(1)

    def make():
        torch.manual_seed(args.seed)
        return torch.nn.Sequential(torch.nn.Linear(args.d_in, args.hidden), torch.nn.Tanh(),
                                   torch.nn.Linear(args.hidden, 1))

    model, ref = make(), make()
    params = list(model.parameters())
    flat_grad = torch.zeros(sum(p.numel() for p in params))
    n, r = comm.size, comm.rank
    shard = args.batch // n
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    loss = ref_loss = 0.0
    for step in range(args.steps):
        lo = (step * args.batch) % len(x)
        xb, yb = xt[lo:lo + args.batch], yt[lo:lo + args.batch]
        model.zero_grad()
        out = torch.nn.functional.mse_loss(model(xb[r * shard:(r + 1) * shard]), yb[r * shard:(r + 1) * shard])
        out.backward()
        torch.cat([p.grad.reshape(-1) for p in params], out=flat_grad)
        comm.all_reduce(flat_grad, dmsc.ReduceOp.AVG)  # a torch tensor, through DLPack
        with torch.no_grad():
            off = 0
            for p in params:
                p -= args.lr * flat_grad[off:off + p.numel()].view_as(p)
                off += p.numel()
        loss = float(out.detach())
        ref.zero_grad()
        ref_out = torch.nn.functional.mse_loss(ref(xb), yb)
        ref_out.backward()
        with torch.no_grad():
            for p in ref.parameters():
                p -= args.lr * p.grad
        ref_loss = float(ref_out.detach())

    def flat(m):
        return torch.cat([p.detach().reshape(-1) for p in m.parameters()]).double().numpy()

    return flat(model), flat(ref), loss, ref_loss, 1e-4


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=96, help="global batch (split evenly over the ranks)")
    ap.add_argument("--samples", type=int, default=960)
    ap.add_argument("--d-in", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--torch", action="store_true", help="train a torch CPU model (torch must be installed)")
    args = ap.parse_args()

    comm = dmsc.init()
    n, r = comm.size, comm.rank
    if args.batch % n:
        raise SystemExit(f"--batch {args.batch} must be a multiple of the {n} ranks")
    x, y = make_data(args.samples, args.d_in, args.seed)
    train = train_torch if args.torch else train_numpy
    w, w_ref, loss, ref_loss, tol = train(args, comm, x, y)

    # Identical on every rank: gather everyone's weights and compare bitwise.
    everyone = np.zeros(n * w.size)
    comm.all_gather(np.ascontiguousarray(w), out=everyone)
    for k, wk in enumerate(everyone.reshape(n, -1)):
        assert np.array_equal(wk, w), f"rank {k}'s weights differ from rank {r}'s"
    # Equal to single-process full-batch training.
    err = float(np.max(np.abs(w - w_ref)))
    assert err <= tol * max(1.0, float(np.max(np.abs(w_ref)))), f"weights differ from the reference by {err}"
    # The mean of the shards' losses is the full-batch loss of the last step.
    mean_loss = np.array([loss])
    comm.all_reduce(mean_loss, dmsc.ReduceOp.AVG)
    assert abs(mean_loss[0] - ref_loss) <= 1e3 * tol * max(1.0, ref_loss), (mean_loss[0], ref_loss)
    if r == 0:
        kind = "torch" if args.torch else "numpy"
        print(f"{kind} MLP, {n} ranks, {args.steps} steps: last loss {mean_loss[0]:.6f} "
              f"(single-process reference {ref_loss:.6f})")
        print(f"weights identical on all {n} ranks; max |w - w_reference| = {err:.3g}")
    comm.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
