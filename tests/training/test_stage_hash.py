"""The stage's weights hash (PoNW's before/after) is remembered only while no weight changed."""

from __future__ import annotations

import torch

from app.node.training.stage import state_hash
from tests.training.training_helpers import make_stage, tiny_config


def _fresh(stage) -> str:  # noqa: ANN001
    return state_hash(stage.shard.state_dict())


def test_the_hash_follows_every_kind_of_weight_write() -> None:
    stage = make_stage((1, 2), tiny_config())
    first = stage.weights_hash()
    assert first == _fresh(stage) and stage.weights_hash() == first  # remembered, still right
    with torch.no_grad():  # an optimizer / outer step writes in place
        stage.params[0].add_(1e-3)
    assert stage.weights_hash() == _fresh(stage) != first
    state = {k: v.clone() for k, v in stage.shard.state_dict().items()}
    state[next(iter(state))].mul_(0.5)
    stage.load_weights(state)  # a download from a replica
    assert stage.weights_hash() == _fresh(stage)
    stage.params[0].data = stage.params[0].data.clone() * 2  # a storage swap, as vocabulary growth does
    assert stage.weights_hash() == _fresh(stage)
