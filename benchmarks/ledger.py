"""Ledger benchmark: signature speed, proof ingestion, and gossip convergence on N nodes.

Prints one JSON object. Every rate comes with a baseline measured in the same run:

* signatures: pure-Python ``ecdsa`` verification with a fresh key object per call (the naive
  way, PLATFORM.md's figure) is the baseline; ``ecdsa`` with the ledger's cached precomputed keys
  and ``coincurve`` (only if installed) are reported as ratios. All backends verify the same
  signatures and must agree (a tampered copy of each must fail everywhere).
* ingestion: proofs/s through ``Ledger.submit_many`` plus one replay, as a ratio of verifying the
  same proofs' signatures alone (what the ledger costs beyond the signature check), in wall time
  and in this process's CPU time (the figure that does not move with the machine's load).
* convergence: ``--records`` signed records (transfers among accounts and PoNW proofs) land on
  random nodes among ``--nodes`` ledgers in one process; each gossip round every node pulls from
  ``--fanout`` random peers (``sync.pull``, the same calls the gRPC gossip makes) until all state
  hashes agree. Baseline: one ledger ingesting every record once, times the node count (the
  least work any scheme can do, since each node must verify every record itself).

Default run (2,000 records, 20 nodes) takes about a minute here; ``--records 10000`` is the
issue's full figure (several minutes with pure-Python signatures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ecdsa  # noqa: E402
from ecdsa.util import sigdecode_string  # noqa: E402

from app.crypto import keys  # noqa: E402
from app.node.economics import ponw  # noqa: E402
from app.node.economics.constants import EconomicsConfig, neuro  # noqa: E402
from app.node.economics.ledger import Ledger  # noqa: E402
from app.node.economics.records import Record  # noqa: E402
from app.node.economics.sync import pull  # noqa: E402

T0 = 1_800_000_000_000


def _keys(n: int, offset: int = 0) -> list[keys.PrivateKey]:
    return [keys.PrivateKey(hashlib.sha256(b"bench%d" % (i + offset)).digest()) for i in range(n)]


def bench_signatures(count: int) -> dict:
    signers = _keys(20)
    items = []
    for i in range(count):
        key = signers[i % len(signers)]
        message = b"record %d" % i
        items.append((key.public_key.data, message, key.sign(message)))
    tampered = [(pub, msg + b"!", sig) for pub, msg, sig in items[:50]]

    def plain(pub: bytes, msg: bytes, sig: bytes) -> bool:
        vk = ecdsa.VerifyingKey.from_string(pub, curve=ecdsa.SECP256k1, hashfunc=hashlib.sha256)
        try:
            return vk.verify(sig, msg, hashfunc=hashlib.sha256, sigdecode=sigdecode_string)
        except ecdsa.BadSignatureError:
            return False

    def cached(pub: bytes, msg: bytes, sig: bytes) -> bool:
        try:
            return keys._verifying_key(pub).verify(sig, msg, hashfunc=hashlib.sha256, sigdecode=sigdecode_string)
        except ecdsa.BadSignatureError:
            return False

    backends = {"ecdsa_plain": plain, "ecdsa_cached": cached}
    try:
        import coincurve

        def fast(pub: bytes, msg: bytes, sig: bytes) -> bool:
            der = coincurve.ecdsa.cdata_to_der(coincurve.ecdsa.deserialize_compact(sig))
            return coincurve.PublicKey(pub).verify(der, msg)

        backends["coincurve"] = fast
    except ImportError:
        pass
    result: dict = {"signatures": count, "coincurve_installed": "coincurve" in backends}
    for name, fn in backends.items():
        assert all(fn(*item) for item in items[:50]) and not any(fn(*item) for item in tampered), name
        start = time.perf_counter()
        ok = all(fn(*item) for item in items)
        result[f"{name}_verify_per_s"] = round(count / (time.perf_counter() - start), 1)
        assert ok, name
    base = result["ecdsa_plain_verify_per_s"]
    result["ratio_cached_vs_plain"] = round(result["ecdsa_cached_verify_per_s"] / base, 2)
    result["ratio_coincurve_vs_plain"] = (round(result["coincurve_verify_per_s"] / base, 2)
                                          if "coincurve" in backends else None)
    return result


def bench_ingestion(count: int, config: EconomicsConfig) -> dict:
    provers = _keys(50, offset=1000)
    start_epoch = T0 // config.epoch_ms
    proofs = []
    for i in range(count):
        epoch = start_epoch + i // len(provers)
        work = ponw.WorkFigures(uptime_ms=config.epoch_ms // 2, tier=3, layers=1)
        proofs.append(ponw.make_proof(provers[i % len(provers)], config, epoch=epoch, kind="uptime", work=work,
                                      timestamp_ms=epoch * config.epoch_ms + 5).to_bytes())
    now = (start_epoch + count // len(provers) + 1) * config.epoch_ms  # just after the last epoch
    parsed = [Record.from_bytes(raw, check_signature=False) for raw in proofs]
    keys._verifying_key.cache_clear()  # both runs start with cold per-key tables
    wall, cpu = time.perf_counter(), time.process_time()
    assert all(keys.verify(r.author, r.signing_payload(), r.signature) for r in parsed)
    bare_wall, bare_cpu = time.perf_counter() - wall, time.process_time() - cpu
    keys._verifying_key.cache_clear()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp), config, clock=lambda: now / 1000)
        wall, cpu = time.perf_counter(), time.process_time()
        results = ledger.submit_many(proofs)
        ledger.state_hash()
        ingest_wall, ingest_cpu = time.perf_counter() - wall, time.process_time() - cpu
        ledger.close()
    assert all(r.accepted for r in results)
    return {"proofs": count, "proofs_per_s": round(count / ingest_wall, 1),
            "bare_verify_per_s": round(count / bare_wall, 1),
            "ratio_ingest_vs_bare_verify": round(bare_wall / ingest_wall, 2),
            # CPU time of this process: what the ledger itself costs, whatever else the machine runs
            "cpu_us_per_proof": round(ingest_cpu / count * 1e6, 1),
            "bare_verify_cpu_us_per_proof": round(bare_cpu / count * 1e6, 1),
            "ratio_ingest_vs_bare_verify_cpu": round(bare_cpu / ingest_cpu, 2)}


def make_burst(count: int, config: EconomicsConfig, genesis: keys.PrivateKey) -> list[bytes]:
    """Genesis to 50 accounts, then transfers among them (per-account sequences) and proofs."""
    accounts = _keys(50, offset=2000)
    rng = random.Random(7)
    out = [Record.create(genesis, "genesis", config.network_id, T0,
                         {"allocations": [[k.address, neuro(1000)] for k in accounts]})]
    seqs = {k.address: 0 for k in accounts}
    proof_epoch = {k.address: T0 // config.epoch_ms for k in accounts}
    for i in range(1, count):
        author = accounts[rng.randrange(len(accounts))]
        ts = T0 + i * 10
        if rng.random() < 0.7:
            seqs[author.address] += 1
            to = accounts[rng.randrange(len(accounts))]
            body = {"to": to.address, "amount": rng.randrange(1, neuro(5)), "fee": 100, "memo": ""}
            out.append(Record.create(author, "transfer", config.network_id, ts, body, seq=seqs[author.address]))
        else:
            epoch = proof_epoch[author.address] = max(proof_epoch[author.address] + 1, ts // config.epoch_ms)
            work = ponw.WorkFigures(uptime_ms=config.epoch_ms // 2, tier=3, layers=1)
            out.append(ponw.make_proof(author, config, epoch=epoch, kind="uptime", work=work,
                                       timestamp_ms=epoch * config.epoch_ms + 1))
    return [r.to_bytes() for r in out]


def bench_convergence(count: int, nodes: int, fanout: int, config: EconomicsConfig,
                      genesis: keys.PrivateKey) -> dict:
    burst = make_burst(count, config, genesis)
    now = T0 + count * 10 + 10 * config.epoch_ms
    rng = random.Random(11)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Ledger(Path(tmp) / "baseline", config, clock=lambda: now / 1000)
        start = time.perf_counter()
        baseline.submit_many(burst)
        target = baseline.state_hash()
        single = time.perf_counter() - start
        baseline.close()
        ledgers = [Ledger(Path(tmp) / f"n{i}", config, clock=lambda: now / 1000) for i in range(nodes)]
        start = time.perf_counter()
        for raw in burst:  # the burst: each record reaches one random node first
            ledgers[rng.randrange(nodes)].submit(raw)
        cursors: dict[tuple[int, int], int] = {}
        rounds = 0
        while len({ledger.state_hash() for ledger in ledgers}) > 1 or ledgers[0].state_hash() != target:
            rounds += 1
            for a in range(nodes):
                for b in rng.sample([i for i in range(nodes) if i != a], fanout):
                    cursors[a, b], _ = pull(ledgers[b], ledgers[a], cursors.get((a, b), 0), page=1000)
        elapsed = time.perf_counter() - start
        for ledger in ledgers:
            ledger.close()
    return {"records": count, "nodes": nodes, "fanout": fanout, "gossip_rounds": rounds,
            "seconds_to_same_state_hash": round(elapsed, 2), "single_node_ingest_s": round(single, 2),
            "ratio_vs_ideal_nodes_x_single_ingest": round(elapsed / (single * nodes), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signatures", type=int, default=1000)
    parser.add_argument("--proofs", type=int, default=1000)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--fanout", type=int, default=2)
    args = parser.parse_args()
    genesis = keys.PrivateKey(hashlib.sha256(b"bench-genesis").digest())
    # production challenge window (600 s): the whole burst arrives while its proofs are still checkable
    config = EconomicsConfig.devnet(genesis_public_key=genesis.public_key.data.hex(), max_proofs_per_hour=10**6,
                                    challenge_window_ms=600_000)
    result = {"benchmark": "ledger", "signature": bench_signatures(args.signatures)}
    result["ingestion"] = bench_ingestion(args.proofs, config)
    result["convergence"] = bench_convergence(args.records, args.nodes, args.fanout, config, genesis)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
