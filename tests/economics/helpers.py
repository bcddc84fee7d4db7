"""A tiny devnet for ledger tests: fixed keys, a fixed clock, record builders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from app.crypto.keys import PrivateKey
from app.node.economics import ponw
from app.node.economics.constants import EconomicsConfig, neuro
from app.node.economics.ledger import Ledger
from app.node.economics.records import Record

T0 = 1_800_000_000_000
"""A fixed canonical start time (ms) so tests do not depend on the wall clock."""


def key(n: int) -> PrivateKey:
    """Deterministic test keys: secret = n as 32 bytes (never use such keys for value)."""
    return PrivateKey((1000 + n).to_bytes(32, "big"))


@dataclass
class Devnet:
    genesis: PrivateKey = field(default_factory=lambda: key(0))
    config: EconomicsConfig | None = None
    seqs: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = EconomicsConfig.devnet(genesis_public_key=self.genesis.public_key.data.hex())

    def ledger(self, path: Path) -> Ledger:
        return Ledger(path, self.config, clock=lambda: T0 / 1000)

    def genesis_record(self, allocations: dict[str, int], ts: int = T0) -> Record:
        body = {"allocations": [[addr, amount] for addr, amount in sorted(allocations.items())]}
        return Record.create(self.genesis, "genesis", self.config.network_id, ts, body)

    def signed(self, author: PrivateKey, kind: str, body: dict, ts: int, seq: int | None = None) -> Record:
        """A sequenced record with the author's next sequence number unless ``seq`` is given."""
        if seq is None:
            seq = self.seqs.get(author.address, 0) + 1
            self.seqs[author.address] = seq
        return Record.create(author, kind, self.config.network_id, ts, body, seq=seq)

    def transfer(self, author: PrivateKey, to: PrivateKey, amount: int, ts: int, fee: int = 100,
                 seq: int | None = None) -> Record:
        body = {"to": to.address, "amount": amount, "fee": fee, "memo": ""}
        return self.signed(author, "transfer", body, ts, seq)

    def stake(self, author: PrivateKey, amount: int, ts: int) -> Record:
        return self.signed(author, "stake", {"amount": amount}, ts)

    def proof(self, author: PrivateKey, epoch: int, kind: str = "training", batches: int = 10, layers: int = 2,
              tier: int = 3, offset_ms: int = 10, layer_us: int = 100, **figures) -> Record:
        """A proof stamped ``offset_ms`` into ``epoch``; training and inference work ends then and
        spans just the time ``batches x layers`` passes of ``layer_us`` take (unless given)."""
        timestamp = epoch * self.config.epoch_ms + offset_ms
        if kind in ("training", "inference"):
            figures.setdefault("work_end_ms", timestamp)
            needed_ms = -(-batches * layers * layer_us // 1000)
            figures.setdefault("work_start_ms", figures["work_end_ms"] - max(needed_ms, 1))
            figures.setdefault("layer_us", layer_us)
        work = ponw.WorkFigures(batches=batches if kind == "training" else 0, layers=layers if kind != "verification" else 0,
                                tier=tier,
                                uptime_ms=figures.pop("uptime_ms", 0), role=figures.pop("role", "worker"),
                                **figures)
        before, after = (b"\x01" * 32, b"\x02" * 32) if kind == "training" else (b"", b"")
        return ponw.make_proof(author, self.config, epoch=epoch, kind=kind, work=work, timestamp_ms=timestamp,
                               model_before=before, model_after=after)

    def epoch_of(self, ts: int) -> int:
        return ts // self.config.epoch_ms


def submit_all(ledger: Ledger, records: list[Record], now_ms: int | None = None) -> list:
    """Submits each record as if it arrived when it was made (or at ``now_ms``)."""
    return [ledger.submit(r.to_bytes(), r.timestamp_ms if now_ms is None else now_ms) for r in records]


ALICE, BOB, CAROL, DAVE = key(1), key(2), key(3), key(4)
THOUSAND = neuro(1000)
