"""``main.py generate "PROMPT"``: text from the network's model, or from the local checkpoint.

Through the network when a tracker (``--tracker`` or the data dir's config.toml) answers and a
chain of holders covers every layer (runtime/inference_client.py), paid from the data dir's wallet
(its key unlocked as the node unlocks it, app/node/identity.py; each payment kept in the data dir's
ledger, so the node's gossip spreads it and the next sequence number follows it; the data dir is
locked meanwhile, as the node itself would use the same key); without a wallet only holders that
charge nothing serve it. Otherwise from this data dir's checkpoint when it holds the whole model (a
solo node). It says which on stderr, prints the text on stdout, and exits 1 when neither is
possible, saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.node.flags import count_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the text to continue")
    parser.add_argument("--max-tokens", type=count_argument(1), default=64, help="tokens to generate (default 64)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95)")
    parser.add_argument("--seed", type=int, help="sampling seed (reproducible output)")
    parser.add_argument("--tracker", action="append", metavar="HOST:PORT", help="bootstrap tracker (repeatable)")
    parser.add_argument("--data-dir", type=Path, help="a node's data dir: its config and checkpoint")
    parser.add_argument("--join-wait", type=float, default=10.0, help="seconds to wait for the network (default 10)")


def run(args: argparse.Namespace) -> int:
    from app.node.config import ConfigError, NodeConfig, apply_file_settings, load_config_file, start_data_dir
    from app.node.datadir_lock import DataDirBusy
    from app.node.identity import IdentityError
    from app.node.migration import adopted_architecture
    from app.node.modes import UNITS_PER_NEURO
    from app.node.tokenizer import NeuroTokenizer
    from app.node.training.config import TrainingConfig

    if args.temperature < 0 or not 0 < args.top_p <= 1:
        print("generate: error: need --temperature >= 0 and 0 < --top-p <= 1", file=sys.stderr)
        return 2
    try:
        config = NodeConfig(data_dir=start_data_dir(args.data_dir).expanduser())
        config = apply_file_settings(config, load_config_file(config.config_path))
        training = TrainingConfig.from_dict(config.training)
    except ConfigError as exc:
        print(f"generate: error: {exc}", file=sys.stderr)
        return 2
    tokenizer = NeuroTokenizer.genesis()
    arch = adopted_architecture(config.data_dir, training.architecture())
    prompt = tokenizer.encode(args.prompt) or [tokenizer.bos_id]
    trackers = list(args.tracker or config.trackers)
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "seed": args.seed, "eos_id": tokenizer.eos_id}
    why_not_network = "no tracker given (--tracker) or configured"
    if trackers:
        from app.node.runtime.inference_client import GenerationFailed, generate_via_trackers

        try:
            wallet = _Wallet.open(config)
        except (DataDirBusy, IdentityError) as exc:
            print(f"generate: error: cannot pay from the wallet in {config.data_dir}: {exc}", file=sys.stderr)
            return 1
        try:
            result = asyncio.run(generate_via_trackers(trackers, arch, prompt, args.max_tokens,
                                                       join_wait_s=args.join_wait, payer=wallet.payer, **sampling))
        except GenerationFailed as exc:
            why_not_network = str(exc) + ("" if wallet.payer else f" (no wallet in {config.data_dir} to pay from)")
        else:
            paid = (f", paid {result.paid / UNITS_PER_NEURO:.6f} NEURO from wallet {wallet.payer.key.address}"
                    if wallet.payer and result.paid else "")
            print(f"generate: through the network ({len(result.holders)} stages, {len(result.tokens)} tokens, "
                  f"{result.tokens_per_s:.1f} tokens/s{paid})", file=sys.stderr)
            print(tokenizer.decode(result.tokens))
            return 0
        finally:
            wallet.close()
    tokens, why_not_local = _local(config.data_dir, arch, prompt, args.max_tokens, sampling)
    if tokens is None:
        print(f"generate: error: not through the network ({why_not_network}) and not locally ({why_not_local})",
              file=sys.stderr)
        return 1
    print(f"generate: from the local checkpoint in {config.data_dir} (the network: {why_not_network})",
          file=sys.stderr)
    print(tokenizer.decode(tokens))
    return 0


@dataclass
class _Wallet:
    """The data dir's wallet as a payer for the network, with the data dir locked and its ledger open
    for as long as the generation runs; ``payer`` None where the data dir has no wallet."""

    payer: Any = None
    ledger: Any = None
    lock: Any = None

    @classmethod
    def open(cls, config: Any) -> _Wallet:
        import time

        from app.node.datadir_lock import DataDirLock
        from app.node.economics.constants import from_settings
        from app.node.economics.ledger import Ledger
        from app.node.identity import load_node_key
        from app.node.runtime.inference_client import Payer
        from app.wallet.keystore import Keystore

        if not Keystore(config.data_dir).has_key():
            return cls()
        lock = DataDirLock(config.data_dir)
        lock.acquire()  # the running node would use the same key and ledger: one of them at a time
        try:
            key = load_node_key(config)
            economics = from_settings(config.economics)
            ledger = Ledger(config.data_dir, economics)
        except BaseException:
            lock.release()
            raise
        payer = Payer(key, economics, next_seq=lambda: ledger.next_seq(key.address),
                      keep_payment=lambda raw: ledger.submit(raw, int(time.time() * 1000)))
        return cls(payer, ledger, lock)

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        if self.lock is not None:
            self.lock.release()


def _local(data_dir: Path, arch: object, prompt: list[int], max_tokens: int,
           sampling: dict[str, object]) -> tuple[list[int] | None, str]:
    """Generate from the data dir's checkpoint when it holds the whole model; else (None, why)."""
    from app.node.model.checkpoint import CheckpointError, load_checkpoint
    from app.node.model.generation import generate
    from app.node.model.shard import ModelShard
    from app.node.training.checkpointing import read_resume_point

    try:
        point = read_resume_point(data_dir)
    except CheckpointError as exc:
        return None, f"the checkpoint is unusable: {exc}"
    if point is None:
        return None, f"there is no checkpoint in {data_dir}"
    whole = point.layer_range == (0, point.arch.layers) and point.with_embedding and point.with_head
    if not whole:
        return None, (f"the checkpoint holds layers {point.layer_range[0]}-{point.layer_range[1] - 1} of "
                      f"{point.arch.layers}, not the whole model")
    checkpoint = load_checkpoint(point.path)
    model = ModelShard.full(point.arch)
    model.load_state_dict({k[len("model."):]: v for k, v in checkpoint.state.items() if k.startswith("model.")})
    return generate([model], prompt, max_tokens, **sampling), ""  # type: ignore[arg-type]
