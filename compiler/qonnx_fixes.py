"""A fix installed into qonnx before fpgaprint transforms a model.

qonnx 0.4's `ModelWrapper.rename_tensor` renames only the first of a node's inputs that
reads the tensor: a node reading one tensor twice (`torch.cat([x, x])` exports a Concat of
x and x) is left reading a tensor that no longer exists, and every later shape check fails
("Found unspecified tensor shapes"). `GiveReadableTensorNames` (qonnx's cleanup, FINN+'s
tidy-up) renames every tensor, so any such model fails. The fixed version renames every
occurrence.
"""

from __future__ import annotations

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from qonnx.core.modelwrapper import ModelWrapper

    original = ModelWrapper.rename_tensor

    def rename_tensor(self, old_name: str, new_name: str) -> None:
        original(self, old_name, new_name)
        for n in self.graph.node:
            for k, t in enumerate(n.input):
                if t == old_name:
                    n.input[k] = new_name

    rename_tensor.__doc__ = original.__doc__
    ModelWrapper.rename_tensor = rename_tensor
    _installed = True
