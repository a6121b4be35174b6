"""Output heads kept on the host: Softmax, LogSoftmax, Sigmoid, ArgMax and TopK at the end of
a classifier.

They are monotonic per element or per row, so the label (argmax) is that of the tensor they
read: the accelerator stops before them, its raw output stays the integer the exact check
compares, and the host applies them (the golden model, the boards' host side). Which ops
follow the accelerator is recorded in the package's `io.host_ops` (core/golden.py checks it).
"""

from __future__ import annotations

from fpgaprint.core.golden import HEAD_OPS


def head_nodes(model) -> list:
    """The output head: the chain of HEAD_OPS nodes that ends at the graph's first output,
    in graph order (empty when the graph ends otherwise)."""
    out = []
    name = model.graph.output[0].name
    while True:
        node = model.find_producer(name)
        if node is None or node.op_type not in HEAD_OPS:
            break
        if node.op_type == "TopK" and list(node.output).index(name) != 1:
            break  # a TopK head answers with its indices
        out.append(node)
        name = node.input[0]
    return out[::-1]


def head_names(model) -> set[str]:
    return {n.name for n in head_nodes(model)}


def detach(model):
    """Take the output head off `model` (in place) so FINN+ never maps it (1.6 would make
    Softmax an `HWSoftmax` float layer and TopK a `LabelSelect`): the graph then ends at the
    tensor the head reads. Returns what `attach` needs, or None without a head."""
    import copy

    nodes = head_nodes(model)
    if not nodes:
        return None
    g = model.graph
    used = {t for n in nodes for t in n.input}
    made = {t for n in nodes for t in n.output}
    inits = [copy.deepcopy(t) for t in g.initializer if t.name in used]
    scores = nodes[0].input[0]
    # shapes of the head's own tensors (TopK's k and values): FINN+ drops them meanwhile
    infos = [copy.deepcopy(v) for v in g.value_info if v.name in (made | used) - {scores}]
    outputs = [copy.deepcopy(o) for o in g.output]
    vi = model.get_tensor_valueinfo(scores)
    shape = model.get_tensor_shape(scores)
    for n in nodes:
        g.node.remove(n)
    from onnx import TensorProto, helper

    while g.output:
        g.output.pop()
    g.output.append(vi if vi is not None else
                    helper.make_tensor_value_info(scores, TensorProto.FLOAT, shape))
    for v in [v for v in g.value_info if v.name == scores]:
        g.value_info.remove(v)
    return {"nodes": [copy.deepcopy(n) for n in nodes], "inits": inits, "outputs": outputs,
            "infos": infos, "scores": scores}


def attach(model, head):
    """Put a detached head back after the graph's (possibly renamed) output."""
    if head is None:
        return model
    g = model.graph
    scores = g.output[0].name
    old = head["scores"]
    for n in head["nodes"]:
        for k, t in enumerate(n.input):
            if t == old:
                n.input[k] = scores
        g.node.append(n)
    have = {t.name for t in g.initializer}
    g.initializer.extend(t for t in head["inits"] if t.name not in have)
    g.value_info.append(g.output[0])
    have = {v.name for v in g.value_info}
    g.value_info.extend(v for v in head["infos"] if v.name not in have)
    while g.output:
        g.output.pop()
    g.output.extend(head["outputs"])
    return model
