"""The disk cap (limits.disk_bytes) on the shard store and on checkpoints: refused before a byte
is written, reported once, and only under the data dir it was registered for."""

from __future__ import annotations

import pytest

from app.node.data.store import ShardStore
from app.node.disk import DiskBudget, DiskCapExceeded, budget_for, register, tree_bytes


@pytest.fixture
def capped(tmp_path):
    """A data dir with a cap registered the way the engine registers it; yields (dir, budget, messages)."""
    messages: list[str] = []

    def make(cap: int):
        budget = DiskBudget(tmp_path / "node", cap, on_refused=messages.append)
        budget.root.mkdir(parents=True, exist_ok=True)
        made.append(register(budget))
        return tmp_path / "node", budget, messages

    made: list = []
    yield make
    for end in made:
        end()


def test_a_shard_beyond_the_cap_is_refused_and_nothing_is_written(corpus, capped):
    out, manifest = corpus
    first, second = manifest.shards[0], manifest.shards[1]
    data_dir, budget, messages = capped(first.nbytes + first.nbytes // 2)  # room for one shard, not two
    store = ShardStore(data_dir / "genesis", manifest)
    store.put(first.shard_id, (out / first.filename).read_bytes())
    before = sorted(p.name for p in store.root.iterdir())
    with pytest.raises(DiskCapExceeded, match="disk_bytes"):
        store.put(second.shard_id, (out / second.filename).read_bytes())
    # Nothing half-written: no partial file, no temporary left behind, the first shard intact.
    assert sorted(p.name for p in store.root.iterdir()) == before
    assert not store.has(second.shard_id) and store.get(first.shard_id)
    assert tree_bytes(data_dir) <= budget.cap_bytes
    assert len(messages) == 1 and second.shard_id in messages[0]


def test_install_stops_at_the_cap_without_failing(corpus, capped):
    out, manifest = corpus
    size = manifest.shards[0].nbytes
    data_dir, budget, messages = capped(3 * size + size // 2)
    store = ShardStore(data_dir / "genesis", manifest)
    installed = store.install_from(out)
    assert len(installed) == 3 and len(manifest.shards) > 3
    assert tree_bytes(data_dir) <= budget.cap_bytes
    assert messages  # the volunteer hears why the rest was not installed


def test_other_dirs_are_not_capped(corpus, capped, tmp_path):
    out, manifest = corpus
    capped(1)
    assert budget_for(tmp_path / "elsewhere") is None
    store = ShardStore(tmp_path / "elsewhere", manifest)
    assert store.install_from(out) == manifest.shard_ids


def test_the_cap_ends_when_unregistered(tmp_path):
    budget = DiskBudget(tmp_path, 10)
    end = register(budget)
    assert budget_for(tmp_path / "a" / "b.bin") is budget
    end()
    assert budget_for(tmp_path / "a" / "b.bin") is None


def test_checkpoint_evicts_the_older_copy_then_refuses(tmp_path, capped):
    from app.node.model.architecture import ModelArchitecture
    from app.node.model.checkpoint import previous_path
    from app.node.training.checkpointing import checkpoint_path, read_resume_point, save_training_state
    from app.node.training.config import TrainingConfig
    from app.node.training.stage import StageWorker, build_shard

    arch = ModelArchitecture.tiny()
    config = TrainingConfig.from_dict({"model": "tiny"})
    stage = StageWorker(build_shard(arch, (0, arch.layers), with_embedding=True, with_head=True, seed=0), config)
    data_dir, budget, messages = capped(10 * 2**30)
    first = save_training_state(data_dir, stage, None, driver_step=1)
    second = save_training_state(data_dir, stage, None, driver_step=2)
    path = checkpoint_path(data_dir)
    assert first == second == path and previous_path(path).exists()
    size = path.stat().st_size
    # Room for the current checkpoint and one more, not for the older copy too: the copy goes.
    budget.cap_bytes = tree_bytes(data_dir) - previous_path(path).stat().st_size + size + (2 << 20)
    assert save_training_state(data_dir, stage, None, driver_step=3) == path
    assert read_resume_point(data_dir).driver_step == 3
    assert tree_bytes(data_dir) <= budget.cap_bytes and not messages
    # No room at all: skipped and reported, the last checkpoint still whole and loadable.
    budget.cap_bytes = tree_bytes(data_dir)
    assert save_training_state(data_dir, stage, None, driver_step=4) is None
    assert read_resume_point(data_dir).driver_step == 3
    assert len(messages) == 1 and "checkpoint" in messages[0]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
