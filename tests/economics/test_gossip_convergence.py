"""Balances are a function of the set of records: any arrival order gives the same state hash."""

import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.node.economics.constants import neuro
from app.node.economics.replay import compute_state
from app.node.economics.sync import pull, pull_inventory

from .helpers import ALICE, BOB, CAROL, DAVE, T0, THOUSAND, Devnet

NET = Devnet()


def _pool():
    """A mix that exercises every order-sensitive rule: chains of transfers between accounts, a
    double spend, an overspend, stake/unstake, proofs across epochs, a sequence gap filled late."""
    records = [NET.genesis_record({ALICE.address: THOUSAND, BOB.address: neuro(10)})]
    t = T0 + 1
    records += [NET.transfer(ALICE, BOB, neuro(100), t), NET.transfer(BOB, CAROL, neuro(50), t + 5),
                NET.transfer(CAROL, DAVE, neuro(20), t + 9), NET.transfer(DAVE, ALICE, neuro(30), t + 12)]
    records += [NET.transfer(BOB, DAVE, neuro(500), t + 20)]  # overspend unless credits came first
    records += [NET.stake(ALICE, neuro(200), t + 30),
                NET.signed(ALICE, "unstake", {"amount": neuro(50)}, t + 40)]
    seq = NET.seqs[CAROL.address] + 1
    records += [NET.transfer(CAROL, ALICE, neuro(1), t + 50, seq=seq),
                NET.transfer(CAROL, BOB, neuro(2), t + 51, seq=seq)]  # double spend
    epoch = NET.epoch_of(t)
    records += [NET.proof(BOB, epoch + i, offset_ms=20) for i in range(3)]
    records += [NET.proof(DAVE, epoch + 1, kind="uptime", uptime_ms=900, offset_ms=30)]
    records += [NET.transfer(ALICE, CAROL, 7, T0 + 9_000)]  # moves the clock past settlement
    return records


POOL = _pool()
NOW = max(r.timestamp_ms for r in POOL)


@settings(max_examples=60, deadline=None)
@given(st.permutations(range(len(POOL))))
def test_state_hash_is_independent_of_record_order(order):
    expected = compute_state(POOL, NET.config).state_hash()
    assert compute_state([POOL[i] for i in order], NET.config).state_hash() == expected


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), nodes=st.integers(2, 4))
def test_ledgers_gossiping_in_random_order_reach_the_same_state_hash(seed, nodes):
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        ledgers = [NET.ledger(Path(tmp) / f"n{i}") for i in range(nodes)]
        for record in POOL:  # each record first reaches one random node
            ledgers[rng.randrange(nodes)].submit(record.to_bytes(), NOW)
        cursors = {}
        for _ in range(nodes * nodes * 2):  # random pulls, then a full round to finish
            a, b = rng.sample(range(nodes), 2)
            cursors[a, b], _ = pull(ledgers[b], ledgers[a], cursors.get((a, b), 0), page=3, now_ms=NOW)
        for a in range(nodes):  # the last round announces ids first and fetches only what is missing
            for b in range(nodes):
                if a != b:
                    cursors[a, b], _ = pull_inventory(ledgers[b], ledgers[a], cursors.get((a, b), 0), now_ms=NOW)
        hashes = {ledger.state_hash() for ledger in ledgers}
        assert hashes == {compute_state(POOL, NET.config).state_hash()}
        for ledger in ledgers:
            ledger.close()


def test_pool_really_exercises_conflicts_and_rewards():
    state = compute_state(POOL, NET.config)
    statuses = [status for status, _ in state.statuses.values()]
    assert statuses.count("conflict") == 2
    assert any(entry.kind == "reward" for entry in state.entries)
    assert state.accounts[CAROL.address].flagged


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=10))
def test_appending_in_time_order_equals_a_full_replay(chunk_sizes):
    from app.node.economics.replay import extend

    ordered = sorted(POOL, key=lambda r: (r.timestamp_ms, r.record_id))
    state = compute_state([], NET.config)
    position, step, fast_paths = 0, 0, 0
    while position < len(ordered):
        size = chunk_sizes[step % len(chunk_sizes)]
        chunk, position, step = ordered[position:position + size], position + size, step + 1
        if extend(state, chunk):
            fast_paths += 1
        else:  # a conflict arrived: the ledger falls back to a full replay, as here
            state = compute_state(ordered[:position], NET.config)
    assert fast_paths >= 1
    assert state.state_hash() == compute_state(POOL, NET.config).state_hash()
