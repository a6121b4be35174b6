"""Bit-flip attacks on the accelerator's memories (golden model, FINN datatypes).

- random: bits drawn uniformly over every bit of the chosen weight/threshold memories;
- progressive bit search (Rakin et al., ICCV 2019): greedily flip the weight bit that raises
  the attacker's loss most; candidates ranked by a first-order estimate from a differentiable
  surrogate of the golden graph, the best chosen by running the golden model itself.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fpgaprint.core.errors import InputError
from fpgaprint.core.words import Flip, flip


class Surrogate:
    """A differentiable stand-in for a golden graph of MVAU/Thresholding layers.

    Multi-thresholding becomes a sum of sigmoids (temperature: the median threshold step), so
    the loss has gradients with respect to the integer weights.
    """

    SUPPORTED = {"MVAU", "Thresholding", "Mul", "Add"}

    def __init__(self, golden):
        from qonnx.custom_op.registry import getCustomOp

        self.mems = golden.memories()
        self.layers: list[tuple] = []
        m = golden.model
        raw_seen = False
        for node in m.graph.node:
            if node.op_type not in self.SUPPORTED:
                raise InputError(f"progressive bit search: unsupported op {node.op_type} "
                                 f"({node.name})")
            if node.op_type in ("Mul", "Add"):
                p = m.get_initializer(node.input[1])
                if p is None or not raw_seen:
                    raise InputError(f"progressive bit search: unsupported {node.name}")
                self.layers.append((node.op_type, torch.tensor(np.asarray(p, np.float32))))
                continue
            inst = getCustomOp(node)
            if node.op_type == "MVAU" and inst.get_nodeattr("binaryXnorMode"):
                raise InputError(f"progressive bit search: XNOR layer {node.name}")
            thr_key = f"{node.name}/thresholds"
            thr = self.mems[thr_key].values if thr_key in self.mems else None
            no_act = node.op_type == "MVAU" and (inst.get_nodeattr("noActivation") or thr is None)
            act_val = int(inst.get_nodeattr("ActVal")) if not no_act else 0
            self.layers.append((node.op_type, node.name, thr, act_val, no_act))
            raw_seen = node.output[0] == golden.raw_output or raw_seen

    def weight_keys(self) -> list[str]:
        return [f"{layer[1]}/weights" for layer in self.layers if layer[0] == "MVAU"]

    @staticmethod
    def _threshold(acc: torch.Tensor, thr: np.ndarray, act_val: int) -> torch.Tensor:
        t = torch.from_numpy(thr.astype(np.float32))
        steps = np.diff(np.sort(thr, axis=-1), axis=-1)
        tau = float(np.median(steps[steps > 0])) if (steps > 0).any() else 1.0
        return torch.sigmoid((acc[..., None] - t) / tau).sum(-1) + act_val

    def logits(self, x_int: np.ndarray, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        h = torch.from_numpy(np.asarray(x_int, np.float32).reshape(len(x_int), -1))
        for layer in self.layers:
            if layer[0] == "Mul":
                h = h * layer[1]
            elif layer[0] == "Add":
                h = h + layer[1]
            else:
                op, name, thr, act_val, no_act = layer
                if op == "MVAU":
                    h = h @ weights[f"{name}/weights"]
                if not no_act:
                    h = self._threshold(h, thr, act_val)
        return h


def progressive_bit_search(golden, x_int: np.ndarray, y: np.ndarray, max_flips: int = 10,
                           topk: int = 8) -> list[list[Flip]]:
    """Greedy targeted flips; element k is the list of the first k+1 flips."""
    sur = Surrogate(golden)
    keys = sur.weight_keys()
    values = {k: sur.mems[k].values.copy() for k in keys}
    flips: list[Flip] = []
    out: list[list[Flip]] = []
    current = golden
    yt = torch.from_numpy(np.asarray(y, np.int64))
    for _ in range(max_flips):
        w = {k: torch.tensor(v.astype(np.float32), requires_grad=True) for k, v in values.items()}
        loss = F.cross_entropy(sur.logits(x_int, w), yt)
        grads = torch.autograd.grad(loss, list(w.values()))
        cands: list[tuple[float, Flip]] = []
        done = {(k, i) for k, i, _ in flips}
        for k, g in zip(keys, grads):
            mem = sur.mems[k]
            g = g.numpy().reshape(-1)
            v = values[k].reshape(-1)
            for bit in range(mem.bits):
                gain = g * (flip(v, bit, mem.datatype) - v)
                for i in np.argsort(-gain)[:topk]:
                    if (k, int(i)) not in done:
                        cands.append((float(gain[i]), (k, int(i), bit)))
        cands.sort(key=lambda c: -c[0])
        best, best_loss = None, -np.inf
        for _, cand in cands[:topk]:
            _, logits, _ = current.flipped([cand]).run(x_int)
            cl = float(F.cross_entropy(torch.from_numpy(logits), yt))
            if cl > best_loss:
                best, best_loss = cand, cl
        k, i, bit = best
        mem = sur.mems[k]
        values[k].reshape(-1)[i] = flip(int(values[k].reshape(-1)[i]), bit, mem.datatype)
        flips.append(best)
        current = current.flipped([best])
        out.append(list(flips))
    return out
