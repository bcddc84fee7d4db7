"""``neuroshard arch``: the architecture the scaler picks for a network (imports no torch)."""

from __future__ import annotations

import argparse
import json
import math

from app.node.model.architecture import GIB, calculate_optimal_architecture, parameter_budget

TABLE_NODES = (1, 10, 100, 1000, 10000)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=_positive_int, default=1, help="nodes in the network (default 1)")
    parser.add_argument("--memory-gb-per-node", type=_positive_float, default=8.0,
                        help="memory each node offers, GiB (default 8)")
    parser.add_argument("--vocab", type=_positive_int, default=266, help="vocabulary size (default 266)")
    parser.add_argument("--table", action="store_true",
                        help="print a Markdown table for 1, 10, 100, 1000 and 10000 nodes instead")


def describe(nodes: int, memory_gb_per_node: float, vocab: int = 266) -> dict[str, object]:
    """The scaler's choice plus the numbers behind it, as plain JSON-able values."""
    total = int(nodes * memory_gb_per_node * GIB)
    arch = calculate_optimal_architecture(total, nodes=nodes, vocab=vocab)
    return {"nodes": nodes, "memory_gb_per_node": memory_gb_per_node, "total_memory_bytes": total,
            "parameter_budget": int(parameter_budget(total, nodes)), "param_count": arch.param_count(),
            "train_bytes_per_layer": arch.train_bytes_per_layer(), "architecture": arch.to_dict()}


def table(memory_gb_per_node: float, vocab: int = 266) -> str:
    lines = [f"| nodes ({memory_gb_per_node:g} GB each) | layers × hidden | heads (kv) | ffn | parameters |",
             "| --- | --- | --- | --- | --- |"]
    for n in TABLE_NODES:
        d = describe(n, memory_gb_per_node, vocab)
        a = d["architecture"]
        assert isinstance(a, dict)
        params = int(d["param_count"])  # type: ignore[call-overload]
        lines.append(f"| {n} | {a['layers']} × {a['hidden']} | {a['heads']} ({a['kv_heads']}) | {a['ffn']} | "
                     f"{_human(params)} |")
    return "\n".join(lines)


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def run(args: argparse.Namespace) -> int:
    if args.table:
        print(table(args.memory_gb_per_node, args.vocab))
    else:
        print(json.dumps(describe(args.nodes, args.memory_gb_per_node, args.vocab), indent=2))
    return 0
