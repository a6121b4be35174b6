"""The nodes as the user wrote them: each node's name and op are kept in its doc_string (FINN+
keeps it while it transforms a node in place), so errors can name the user's node."""

from __future__ import annotations

from fpgaprint.core.golden import HW_DOMAIN

USER_NODE = "fpgaprint user node: "  # doc_string prefix naming the node as the user wrote it


def mark_user_nodes(model) -> None:
    """Remember each node's name and op as the user wrote them (kept by FINN+ while it
    transforms a node in place), so errors can name the user's node."""
    for node in model.graph.node:
        if not node.doc_string.startswith(USER_NODE):
            node.doc_string = f"{USER_NODE}{node.op_type} {node.name or '(unnamed)'}"


def user_node(model, node) -> str:
    """The user's node behind `node`: its own mark, else the nearest marked neighbour."""
    if node.doc_string.startswith(USER_NODE):
        return node.doc_string[len(USER_NODE):]
    seen, frontier = set(), [node]
    for _ in range(8):  # a few hops up, then down, through inserted nodes
        nxt = []
        for n in frontier:
            for t in n.input:
                p = model.find_producer(t)
                if p is not None and p.name not in seen:
                    nxt.append(p)
            for c in model.find_consumers(n.output[0]) if n.output else []:
                if c.name not in seen:
                    nxt.append(c)
        for n in nxt:
            seen.add(n.name)
            if n.doc_string.startswith(USER_NODE) and not n.domain.startswith(HW_DOMAIN):
                return n.doc_string[len(USER_NODE):]
        frontier = nxt
    return f"{node.op_type} {node.name}"
