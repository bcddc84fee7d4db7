"""VocabService: voted merges reach the tokenizer, the loader and the stages, consistently."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import torch

from app.crypto.keys import PrivateKey
from app.node.data.builder import build_genesis
from app.node.data.loader import BatchLoader
from app.node.data.store import ShardStore
from app.node.economics.governance import Phase, Proposal, ready_proposals
from app.node.runtime.vocab_service import VOCAB_FILE, VocabService, VocabStateError
from app.node.tokenizer import FIRST_MERGE, NeuroTokenizer
from app.node.training.pipeline import PipelineDriver, PipelineStalled
from app.node.training.stage import StageWorker, build_shard
from app.node.training.sync import StageSync
from app.node.training.transport import LocalTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_helpers import ARCH, patterned_batch, tiny_config  # noqa: E402

CONFIG = tiny_config(inner_steps=3)
GENESIS = NeuroTokenizer.genesis()


def proposal(pid: str, created: int, merges: list[tuple[bytes, bytes]], phase: Phase = Phase.IMPLEMENTED) -> Proposal:
    return Proposal(pid, "author", pid, merges, created, phase=phase)


FIRST = proposal("p1", 10, [(b"a", b"b"), (b"c", b"d")])
SECOND = proposal("p2", 20, [(b"ab", b"cd")])


def stage(layers: tuple[int, int], service: VocabService | None = None,
          syncs: dict[str, StageSync] | None = None, name: str = "") -> StageWorker:
    """A stage built as the runtime builds it: guarded by ``service``, and (with ``syncs``) its
    commits running the DiLoCo cadence of ``syncs[name]``, built after it."""
    return StageWorker(build_shard(ARCH, layers, with_embedding=layers[0] == 0, with_head=layers[1] == ARCH.layers,
                                   seed=0), CONFIG, vocab=service.guard() if service else None,
                       after_commit=after_commit(syncs, name) if syncs is not None else None)


def after_commit(syncs: dict[str, StageSync], name: str):  # noqa: ANN201
    async def run(_stage: StageWorker) -> None:  # what NodeTrainer.after_commit does for DiLoCo
        sync = syncs[name]
        sync.note_commit()
        if sync.due:
            await sync.sync()

    return run


# --- the activation order --------------------------------------------------------------------------
def test_ready_proposals_follow_implementation_order_and_wait_for_earlier_votes() -> None:
    voting = proposal("p0", 5, [(b"x", b"y")], Phase.VOTING)
    rejected = proposal("p0", 5, [(b"x", b"y")], Phase.REJECTED)
    assert [p.proposal_id for p in ready_proposals([SECOND, FIRST], set())] == ["p1", "p2"]
    assert ready_proposals([SECOND, FIRST, voting], set()) == []  # p0 may still pass: nothing overtakes it
    assert [p.proposal_id for p in ready_proposals([SECOND, FIRST, rejected], {"p1"})] == ["p2"]


def test_history_survives_a_restart_and_clashing_proposals_are_skipped(tmp_path: Path) -> None:
    clash = proposal("p3", 30, [(b"a", b"b")])  # the same merge as p1: cannot apply
    ledger = [FIRST, SECOND, clash]
    service = VocabService(tmp_path, lambda: ledger)
    assert service.version == GENESIS.version and service.architecture(ARCH).vocab == 266
    assert service.on_round()
    assert service.tokenizer.merges == [(b"a", b"b"), (b"c", b"d"), (b"ab", b"cd")]
    assert [(s.proposal_id, s.applied) for s in service.history] == [("p1", True), ("p2", True), ("p3", False)]
    assert not service.on_round()  # nothing new
    again = VocabService(tmp_path, lambda: ledger)
    assert again.version == service.version and again.history == service.history
    assert again.architecture(ARCH).vocab == 269
    assert again.rewind_to(268) and again.tokenizer.vocab_size == 268  # a checkpoint from between
    assert not again.rewind_to(300) and again.tokenizer.vocab_size == 268
    assert VocabService(tmp_path, lambda: ledger).tokenizer.vocab_size == 268
    data = json.loads((tmp_path / VOCAB_FILE).read_text())
    data["history"][0]["merges"] = [["61", "63"], ["63", "64"]]
    (tmp_path / VOCAB_FILE).write_text(json.dumps(data))
    with pytest.raises(VocabStateError, match="content hash"):
        VocabService(tmp_path, lambda: ledger)


# --- a stage and its loader at a round boundary --------------------------------------------------------
def test_round_boundary_grows_the_stage_and_switches_the_loader(tmp_path: Path) -> None:
    texts = [f"abcd cdab {i} abab cdcd the end. " * 6 for i in range(12)]
    manifest = build_genesis(texts, tmp_path / "corpus", key=PrivateKey.generate(), shard_tokens=512, name="v")
    loader = BatchLoader(ShardStore(tmp_path / "corpus", manifest), manifest, batch_size=4, seq_len=32, seed=1)
    ledger: list[Proposal] = []
    service = VocabService(tmp_path, lambda: ledger)
    syncs: dict[str, StageSync] = {}
    whole = stage((0, ARCH.layers), service, syncs, "me")
    sync = syncs["me"] = StageSync("me", whole, None, CONFIG, on_report=service.round_closed)
    service.attach(whole, sync)
    service.attach_loader(loader)
    driver = PipelineDriver("me", whole, [], None, micro_batches=CONFIG.micro_batches)

    def batch() -> torch.Tensor:
        inputs, targets = loader.next_batch()
        return torch.cat([inputs, targets[:, -1:]], dim=1)

    async def train(steps: range) -> list[int]:
        top = []
        for step in steps:
            b = batch()
            top.append(int(b.max()))
            await driver.train_step(step, b)
        return top

    assert max(asyncio.run(train(range(2)))) < FIRST_MERGE
    ledger += [FIRST, SECOND]  # the vote passes mid-round: nothing changes before the boundary
    assert whole.shard.architecture.vocab == 266 and whole.vocab == GENESIS.version
    asyncio.run(train(range(2, 3)))  # third inner step closes round 0
    assert sync.rounds == 1 and whole.vocab == service.version and service.tokenizer.vocab_size == 269
    assert whole.shard.embedding.table.weight.shape[0] == whole.shard.head.out.weight.shape[0] == 269
    assert loader.merges_applied == 3
    assert max(asyncio.run(train(range(3, 6)))) >= FIRST_MERGE  # the next batches use the new ids, and train
    assert sync.rounds == 2


def test_attach_refuses_a_stage_built_for_another_vocabulary(tmp_path: Path) -> None:
    service = VocabService(tmp_path, lambda: [FIRST])
    service.on_round()
    with pytest.raises(VocabStateError, match="architecture"):
        service.attach(stage((0, ARCH.layers)), None)
    middle = stage((1, 2))
    service.attach(middle, None)  # a middle stage has no vocabulary-shaped tensors
    assert middle.vocab == service.version


# --- replicas -------------------------------------------------------------------------------------------
def two_replicas(tmp_path: Path, ledger: list[Proposal]) -> list[tuple[StageWorker, StageSync, VocabService,
                                                                       PipelineDriver]]:
    """Two whole-model replicas on one DiLoCo cohort, each with its own vocabulary service."""
    net = LocalTransport()
    replicas = []
    syncs: dict[str, StageSync] = {}
    for i in range(2):
        service = VocabService(tmp_path / f"r{i}", lambda: ledger)
        s = stage((0, ARCH.layers), service, syncs, f"r{i}")
        net.add_peer(f"r{i}", (0, ARCH.layers), s.handle)
        sync = syncs[f"r{i}"] = StageSync(f"r{i}", s, net.cohort(f"r{i}"), CONFIG, on_report=service.round_closed)
        service.attach(s, sync)
        replicas.append((s, sync, service, PipelineDriver(f"r{i}", s, [], None, micro_batches=CONFIG.micro_batches)))
    return replicas


def test_two_replicas_growing_at_the_same_round_average_fine(tmp_path: Path) -> None:
    ledger: list[Proposal] = []
    replicas = two_replicas(tmp_path, ledger)

    async def round_(first_step: int, new_ids: bool) -> None:
        async def run(i: int) -> None:
            for step in range(first_step, first_step + CONFIG.inner_steps):
                b = patterned_batch(CONFIG, 10 * step + i).clone()
                if new_ids:
                    b[:, ::4] = FIRST_MERGE + step % 3
                await replicas[i][3].train_step(step, b)

        await asyncio.gather(run(0), run(1))

    asyncio.run(round_(0, False))
    ledger += [FIRST, SECOND]
    asyncio.run(round_(3, False))  # both close round 1 and grow right after its outer step
    (a, sa, _, _), (b, sb, _, _) = replicas
    assert a.shard.architecture.vocab == b.shard.architecture.vocab == 269
    assert a.weights_hash() == b.weights_hash()
    asyncio.run(round_(6, True))  # a round on the grown shapes, with the new tokens in the data
    for sync in (sa, sb):
        report = sync.reports[-1]
        assert set(report.members) == {"r0", "r1"} and report.rejected == ()
    assert a.weights_hash() == b.weights_hash()


# --- driver and head ------------------------------------------------------------------------------------
def _pipeline(tmp_path: Path, driver_ledger: list, head_ledger: list, on_change=None):  # noqa: ANN001, ANN202
    """``on_change(name)``: the vocabulary service of that stage's callback."""
    net = LocalTransport()
    services = {name: VocabService(tmp_path / name, lambda ledger=ledger: ledger,
                                   on_change=on_change(name) if on_change else None)
                for name, ledger in (("driver", driver_ledger), ("head", head_ledger))}
    syncs: dict[str, StageSync] = {}
    first = stage((0, 2), services["driver"], syncs, "driver")
    last = stage((2, ARCH.layers), services["head"], syncs, "head")
    for name, s in (("driver", first), ("head", last)):
        sync = syncs[name] = StageSync(name, s, None, CONFIG, on_report=services[name].round_closed)
        services[name].attach(s, sync)
    net.add_peer("head", (2, ARCH.layers), last.handle)
    net.attempts = 3
    driver = PipelineDriver("driver", first, [2], services["driver"].transport(net),
                            micro_batches=CONFIG.micro_batches)
    return driver, first, last, services


def test_driver_and_head_switch_at_the_same_driver_step(tmp_path: Path) -> None:
    ledger: list[Proposal] = []
    switched: dict[str, int] = {}
    stages: dict[str, StageWorker] = {}
    driver, first, last, services = _pipeline(
        tmp_path, ledger, ledger,
        on_change=lambda name: lambda _tok: switched.setdefault(name, stages[name].inner_step))
    stages.update(driver=first, head=last)

    async def train(steps: range) -> None:
        for step in steps:
            await driver.train_step(step, patterned_batch(CONFIG, step))

    asyncio.run(train(range(2)))
    ledger.append(FIRST)
    asyncio.run(train(range(2, 6)))
    assert switched == {"driver": 3, "head": 3}  # both inside the commit of driver step 2
    assert first.vocab == last.vocab == services["driver"].version != GENESIS.version


def test_a_lagging_head_refuses_then_catches_up_when_its_ledger_agrees(tmp_path: Path) -> None:
    driver_ledger: list[Proposal] = []
    head_ledger: list[Proposal] = []
    driver, first, last, services = _pipeline(tmp_path, driver_ledger, head_ledger)

    async def step(n: int) -> None:
        await driver.train_step(n, patterned_batch(CONFIG, n))

    for n in range(2):
        asyncio.run(step(n))
    driver_ledger.append(FIRST)
    asyncio.run(step(2))  # the driver's round closes: it grows; the head's ledger has not heard
    assert first.shard.architecture.vocab == 268 and last.shard.architecture.vocab == 266
    with pytest.raises(PipelineStalled):
        asyncio.run(step(3))  # refused, retried, refused: no garbage computed
    assert last.inner_step == 3 and first.inner_step == 3
    asyncio.run(services["head"].catch_up("bogus-tag"))  # a tag no ledger here vouches for
    assert last.shard.architecture.vocab == 266
    head_ledger.append(FIRST)  # gossip arrives
    asyncio.run(step(3))  # the head hears the driver's tag, catches up, the retry goes through
    assert last.shard.architecture.vocab == 268 and last.vocab == first.vocab
    assert last.inner_step == first.inner_step == 4


def test_a_replica_whose_ledger_lagged_a_round_takes_the_grown_anchor(tmp_path: Path) -> None:
    net = LocalTransport()
    ledgers: list[list[Proposal]] = [[], []]
    replicas, syncs, services = [], {}, []
    for i in range(2):
        services.append(VocabService(tmp_path / f"r{i}", lambda i=i: ledgers[i]))
        s = stage((0, ARCH.layers), services[-1], syncs, f"r{i}")
        net.add_peer(f"r{i}", (0, ARCH.layers), s.handle)
        sync = syncs[f"r{i}"] = StageSync(f"r{i}", s, net.cohort(f"r{i}"), CONFIG,
                                          on_report=services[-1].round_closed, fetch_peer_state=_state_of(syncs))
        services[-1].attach(s, sync)
        replicas.append((s, PipelineDriver(f"r{i}", s, [], None, micro_batches=CONFIG.micro_batches)))

    async def round_(first_step: int) -> None:
        async def run(i: int) -> None:
            for step in range(first_step, first_step + CONFIG.inner_steps):
                await replicas[i][1].train_step(step, patterned_batch(CONFIG, 10 * step + i))

        await asyncio.gather(run(0), run(1))
        for service in services:
            await service.settle()  # the late replica's adoption runs as a task

    asyncio.run(round_(0))
    ledgers[0].append(FIRST)
    asyncio.run(round_(3))  # r0 grows at this boundary, r1 has not heard of the vote
    (a, _), (b, _) = replicas
    assert (a.shard.architecture.vocab, b.shard.architecture.vocab) == (268, 266)
    ledgers[1].append(FIRST)
    asyncio.run(round_(6))  # shapes differ this round: each refuses the other; r1 grows, then adopts
    assert any(why.startswith("undecodable") for _, why in syncs["r1"].reports[-1].rejected)
    assert b.shard.architecture.vocab == 268 and a.weights_hash() == b.weights_hash()
    asyncio.run(round_(9))
    assert syncs["r0"].reports[-1].rejected == () and a.weights_hash() == b.weights_hash()


def _state_of(syncs: dict[str, StageSync]):  # noqa: ANN202
    async def fetch(_layers: tuple[int, int], peer: str) -> tuple[dict, dict, int]:  # P2PWeights.fetch_diloco
        with syncs[peer].stage.lock:  # the P2P handler serves a copy taken on the stage's executor
            state, rounds = syncs[peer].replica.state_dict(), syncs[peer].rounds
        return state["anchor"], state["momentum"], rounds

    return fetch


def test_replicas_catching_up_at_different_steps_of_a_round_still_share_their_anchor(tmp_path: Path) -> None:
    replicas = two_replicas(tmp_path, [FIRST])
    target = GENESIS.apply_merges(FIRST.merges).version

    async def run(i: int, grow_after: int) -> None:
        s, _, service, driver = replicas[i]
        for step in range(CONFIG.inner_steps):
            if step == grow_after:
                await service.catch_up(target)  # as if a peer at the new vocabulary called
            await driver.train_step(step, patterned_batch(CONFIG, 10 * step + i))

    async def both() -> None:
        await asyncio.gather(run(0, 1), run(1, 2))

    asyncio.run(both())
    (a, sa, _, _), (b, sb, _, _) = replicas
    assert a.shard.architecture.vocab == b.shard.architecture.vocab == 268
    assert sa.reports[-1].rejected == () and set(sa.reports[-1].members) == {"r0", "r1"}
    assert a.weights_hash() == b.weights_hash()


def test_started_service_reads_a_refreshed_copy_of_the_ledger(tmp_path: Path) -> None:
    ledger: list[Proposal] = []
    reads: list[int] = []

    def proposals() -> list[Proposal]:
        reads.append(1)
        return list(ledger)

    service = VocabService(tmp_path, proposals)

    async def go() -> None:
        await service.refresh()
        ledger.append(FIRST)
        count = len(reads)
        assert not service.on_round()  # the hook reads the copy, which predates the vote
        assert len(reads) == count
        await service.refresh()
        assert service.on_round() and service.tokenizer.vocab_size == 268
        service.start(interval_s=0.01)  # the same refresh, on a timer, until stopped

        async def timer_refreshed() -> None:
            while len(reads) <= count + 1:  # a read beyond the two refreshes awaited above
                await asyncio.sleep(0.01)

        await asyncio.wait_for(timer_refreshed(), 60)  # a hang bound: a loaded machine only takes longer
        await service.stop()
        assert len(reads) > count + 1

    asyncio.run(go())


def test_weights_downloaded_for_a_grown_vocabulary_fit_only_after_reaching_its_size(tmp_path: Path) -> None:
    """A node joining the head stage after a vote takes a grown replica's weights: it first grows to
    the replica's size when its own ledger leads there, and refuses a size it cannot vouch for."""
    ledger: list[Proposal] = []
    grown_service = VocabService(tmp_path / "grown", lambda: [FIRST])
    grown = stage((2, 4))
    grown_service.attach(grown, None)
    assert grown_service.on_round() and grown.shard.architecture.vocab == 268
    state = grown.state_for_transfer()

    joiner_service = VocabService(tmp_path / "joiner", lambda: ledger)
    joiner = stage((2, 4))
    joiner_service.attach(joiner, None)
    assert not joiner_service.reach_size(268)  # its ledger has not heard of the vote yet
    assert joiner.shard.architecture.vocab == 266 and joiner_service.reach_size(266)
    ledger.append(FIRST)  # gossip brought the proposal
    assert joiner_service.reach_size(268) and joiner.shard.architecture.vocab == 268
    joiner.load_weights(state)
    assert joiner.weights_hash() == grown.weights_hash()
