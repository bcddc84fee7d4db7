"""Build a private corpus from your own text files: ``python -m app.node.data.build``.

    python -m app.node.data.build --input notes/*.txt --out ./my-corpus [--key-out genesis.key]

Writes the shards, a manifest signed by a freshly generated genesis key, and that key's public
half (``genesis_public_key.hex``) into ``--out``. Point a private devnet's nodes at the folder and
the public key. The private key is discarded unless ``--key-out`` is given (written with mode
0600): it is only needed to sign a new version of the same corpus.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from app.crypto.keys import PrivateKey
from app.node.data.builder import DEFAULT_SHARD_TOKENS, build_genesis
from app.node.data.manifest import DataError


def read_texts(paths: Sequence[Path]) -> Iterator[str]:
    """Each file as one document (UTF-8; undecodable bytes replaced, never fatal)."""
    for path in paths:
        yield path.read_text(encoding="utf-8", errors="replace")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app.node.data.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", nargs="+", type=Path, required=True, help="text files, one document each")
    p.add_argument("--out", type=Path, required=True, help="folder for the shards and manifest")
    p.add_argument("--name", default="private", help="corpus name recorded in the manifest")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS)
    p.add_argument("--key-out", type=Path, help="save the genesis private key here (mode 0600)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    missing = [str(p) for p in args.input if not p.is_file()]
    if missing:
        print(f"error: input files not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    key = PrivateKey.generate()
    try:
        manifest = build_genesis(read_texts(args.input), args.out, key=key, name=args.name,
                                 shard_tokens=args.shard_tokens)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.key_out is not None:
        fd = os.open(args.key_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.to_bytes().hex() + "\n")
    print(f"built corpus {manifest.name!r}: {len(manifest.shards)} shards, {manifest.total_tokens} tokens "
          f"in {args.out}; genesis public key {manifest.public_key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
