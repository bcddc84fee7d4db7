"""Build the bundled genesis sample (resources/genesis/) from the Python standard library's docstrings.

    .venv/bin/python scripts/make_genesis.py [--out resources/genesis] [--max-tokens 1000000]

Any machine with Python has this text, and it is licence-clean (Python Software Foundation
License). The source files are PARSED with ``ast``, never imported, so no standard-library
module runs (``antigravity`` would open a browser). Files are visited in sorted order, so the
same Python version gives the same corpus byte for byte; the signature differs on each run
because every run signs with a fresh genesis key, whose private half is discarded (pass
``--key-out`` to keep it). Commit the new ``genesis_public_key.hex`` with the shards.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.crypto.keys import PrivateKey  # noqa: E402
from app.node.data.builder import DEFAULT_SHARD_TOKENS, build_genesis  # noqa: E402

SKIPPED_DIRS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip", "site-packages",
                "dist-packages", "__pycache__", "tkinter", "pydoc_data"}
"""Tests and bundled third-party text are left out; pydoc_data is a generated topic dump."""

MIN_DOC_CHARS = 40
"""Docstrings shorter than this ("Return self.") teach the model little and repeat a lot."""

DEFAULT_MAX_TOKENS = 1_000_000
"""1M byte tokens = 2 MB of shards: a few MB at most in the repository (issue 5), and far more
text than the tiny devnet model sees in a test run."""


def stdlib_sources(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith((".", "config-")))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(dirpath) / name


def docstrings(path: Path, root: Path) -> Iterator[str]:
    """``module.qualname`` headed docstrings of a module, its classes and functions."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    yield from _walk(tree, module)


def _walk(node: ast.AST, qualname: str) -> Iterator[str]:
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node, clean=True)
        if doc and len(doc) >= MIN_DOC_CHARS:
            yield f"{qualname}\n\n{doc}\n"
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _walk(child, f"{qualname}.{child.name}")


def corpus_texts(root: Path) -> Iterator[str]:
    for path in stdlib_sources(root):
        yield from docstrings(path, root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "resources" / "genesis")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS)
    parser.add_argument("--key-out", type=Path, help="keep the genesis private key here (mode 0600)")
    args = parser.parse_args()
    root = Path(sysconfig.get_paths()["stdlib"])
    for old in args.out.glob("shard-*.bin"):
        old.unlink()
    key = PrivateKey.generate()
    manifest = build_genesis(corpus_texts(root), args.out, key=key, name="genesis-stdlib-docs",
                             shard_tokens=args.shard_tokens, max_tokens=args.max_tokens)
    if args.key_out is not None:
        fd = os.open(args.key_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.to_bytes().hex() + "\n")
    size = sum(p.stat().st_size for p in args.out.glob("shard-*.bin"))
    print(f"{len(manifest.shards)} shards, {manifest.total_tokens} tokens, {size / 1e6:.1f} MB from "
          f"Python {sys.version.split()[0]} at {root}; public key {manifest.public_key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
