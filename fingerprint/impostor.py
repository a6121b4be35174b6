"""Impostors: what a board holding a package can learn from its embedded set alone.

A package carries its fingerprint vectors, their labels and the golden raw outputs. A board
that never runs the model can still answer fresh vectors of the same kind from them. Each
impostor here is trained on a set's own inputs and labels (``distill``: on the source's
outputs, which the package's exact check carries), and judged on vectors it did not see:
the set is cut into `folds` parts and every part is answered by an impostor trained on the
others (cross-fitting), so each answer is that of a model trained on (folds-1)/folds of the
set on a vector of the same kind that it never saw.

- ``centroid``: the nearest class centroid of the set's inputs;
- ``mlp``: a two-layer perceptron trained on the inputs and labels (cross-entropy);
- ``distill``: the same perceptron regressing the source's outputs (mean squared error);
- ``knn``: the nearest vector's label (not used by calibration: the evaluation's held-out
  impostor).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.optim.adam import adam

IMPOSTORS = ("centroid", "mlp", "distill")
FOLDS = 10
EPOCHS = 150
HIDDEN = 64


def _centroid(x: np.ndarray, y: np.ndarray, z: np.ndarray | None, q: np.ndarray, ncls: int,
              seed: int) -> np.ndarray:
    out = np.full((len(q), ncls), -np.inf, dtype=np.float64)
    for c in np.unique(y):
        out[:, c] = -((q - x[y == c].mean(0)) ** 2).sum(1)
    seen = np.isfinite(out)
    out[~seen] = out[seen].min() - 1.0  # a class the fold never saw ranks last
    return out


def _mlp(x: np.ndarray, y: np.ndarray, z: np.ndarray | None, q: np.ndarray, ncls: int,
         seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.ReLU(),
                              torch.nn.Linear(HIDDEN, ncls))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / np.sqrt(max(p.shape[-1], 1))))
    params = list(net.parameters())
    # torch's Adam through its functional form, on all tensors at once (`foreach`): the steps
    # of `torch.optim.Adam(params, lr=3e-3, weight_decay=1e-4)` without its per-step wrappers
    moments = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    steps = [torch.tensor(0.0) for _ in params]
    xt = torch.from_numpy(x.astype(np.float32))
    if z is None:
        target = torch.from_numpy(y.astype(np.int64))
        loss_fn = torch.nn.functional.cross_entropy
    else:
        zc = z - z.mean(1, keepdims=True)
        target = torch.from_numpy((zc / (zc.std() + 1e-9)).astype(np.float32))
        loss_fn = torch.nn.functional.mse_loss
    for _ in range(EPOCHS):
        for p in params:
            p.grad = None
        loss_fn(net(xt), target).backward()
        with torch.no_grad():
            adam(params, [p.grad for p in params], *moments, [], steps, foreach=True,
                 amsgrad=False, beta1=0.9, beta2=0.999, lr=3e-3, weight_decay=1e-4, eps=1e-8,
                 maximize=False)
    with torch.no_grad():
        return net(torch.from_numpy(q.astype(np.float32))).double().numpy()


def _knn(x: np.ndarray, y: np.ndarray, z: np.ndarray | None, q: np.ndarray, ncls: int,
         seed: int) -> np.ndarray:
    d = ((q[:, None, :] - x[None]) ** 2).sum(-1)
    out = np.zeros((len(q), ncls))
    near = d.argsort(1)[:, :3]  # 3 nearest: the label of the nearest, the others rank next
    for r, w in enumerate((4.0, 2.0, 1.0)):  # the nearest always wins
        np.add.at(out, (np.arange(len(q)), y[near[:, r]]), w)
    return out


_LEARNERS = {"centroid": _centroid, "mlp": _mlp, "distill": _mlp, "knn": _knn}


def cross_fit(inputs: np.ndarray, labels: np.ndarray, num_classes: int,
              source_outputs: np.ndarray | None = None, folds: int = FOLDS, seed: int = 0,
              learners: tuple[str, ...] = IMPOSTORS) -> dict[str, np.ndarray]:
    """Out-of-fold outputs (N, classes) of every impostor on the set's own vectors.

    ``distill`` needs `source_outputs` (the source's outputs on `inputs`) and is left out
    without them."""
    x = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1)
    y = np.asarray(labels, dtype=np.int64)
    n = len(x)
    k = max(2, min(folds, n))
    part = np.random.default_rng([seed, 0x1A9]).permutation(n) % k
    out: dict[str, np.ndarray] = {}
    for name in learners:
        if name == "distill" and source_outputs is None:
            continue
        z_all = None if name != "distill" else np.asarray(source_outputs, dtype=np.float64)
        res = np.zeros((n, num_classes))
        for f in range(k):
            tr, te = part != f, part == f
            if not te.any():
                continue
            res[te] = _LEARNERS[name](x[tr], y[tr], None if z_all is None else z_all[tr],
                                      x[te], num_classes, seed * 1000 + f)
        out[name] = res
    return out


def trained_on(inputs: np.ndarray, labels: np.ndarray, num_classes: int, query: np.ndarray,
               source_outputs: np.ndarray | None = None, seed: int = 0,
               learners: tuple[str, ...] = IMPOSTORS) -> dict[str, np.ndarray]:
    """Outputs (len(query), classes) of every impostor trained on a whole set (the package's
    embedded one) for other vectors (a challenge set): the attack a challenge must reject."""
    x = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1)
    q = np.asarray(query, dtype=np.float64).reshape(len(query), -1)
    y = np.asarray(labels, dtype=np.int64)
    out = {}
    for name in learners:
        if name == "distill" and source_outputs is None:
            continue
        z = None if name != "distill" else np.asarray(source_outputs, dtype=np.float64)
        out[name] = _LEARNERS[name](x, y, z, q, num_classes, seed)
    return out
