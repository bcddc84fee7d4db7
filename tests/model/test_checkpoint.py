"""Checkpoints round-trip, refuse other architectures loudly and survive corruption."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.node.model.architecture import ModelArchitecture
from app.node.model.checkpoint import (
    ArchitectureMismatch,
    CheckpointCorrupted,
    CheckpointError,
    load_checkpoint,
    load_with_fallback,
    previous_path,
    save_checkpoint,
)
from app.node.model.growth import grow_to
from app.node.model.shard import ModelShard

ARCH = ModelArchitecture.tiny()


def _model(seed: int) -> ModelShard:
    torch.manual_seed(seed)
    return ModelShard.full(ARCH)


def test_round_trip_restores_state_arch_and_metadata(tmp_path: Path) -> None:
    model = _model(0)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model.state_dict(), ARCH, tokenizer_hash="ab" * 32, extra={"step": "12"})
    ckpt = load_checkpoint(path, expected_arch=ARCH)
    assert ckpt.arch == ARCH and ckpt.tokenizer_hash == "ab" * 32 and ckpt.extra == {"step": "12"}
    fresh = _model(1)
    fresh.load_state_dict(ckpt.state)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not list(tmp_path.glob(".*.tmp"))


def test_tied_and_bf16_state_round_trips(tmp_path: Path) -> None:
    arch = ARCH.with_changes(tie_embeddings=True)
    model = ModelShard.full(arch).to(torch.bfloat16)
    save_checkpoint(tmp_path / "t.safetensors", model.state_dict(), arch)
    ckpt = load_checkpoint(tmp_path / "t.safetensors", arch)
    assert ckpt.state["head.out.weight"].dtype == torch.bfloat16
    assert torch.equal(ckpt.state["head.out.weight"], ckpt.state["embedding.table.weight"])


def test_other_architecture_raises_mismatch_naming_differences_and_offering_growth(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model(0).state_dict(), ARCH)
    bigger = ARCH.with_changes(hidden=128, heads=8, kv_heads=4, layers=6, version=2)
    with pytest.raises(ArchitectureMismatch, match="hidden 64 -> 128") as info:
        load_checkpoint(path, expected_arch=bigger)
    assert "layers 4 -> 6" in str(info.value) and "grow_to" in str(info.value)
    assert path.exists()
    ckpt = load_checkpoint(path)
    model = ModelShard.full(ckpt.arch)
    model.load_state_dict(ckpt.state)
    assert grow_to(model, bigger).architecture.hidden == 128


def test_smaller_expected_architecture_says_growth_cannot_help(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model(0).state_dict(), ARCH)
    with pytest.raises(ArchitectureMismatch, match="growth cannot convert"):
        load_checkpoint(path, expected_arch=ARCH.with_changes(layers=2))


def test_second_save_keeps_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model(0).state_dict(), ARCH, extra={"step": "1"})
    save_checkpoint(path, _model(1).state_dict(), ARCH, extra={"step": "2"})
    assert load_checkpoint(path).extra["step"] == "2"
    assert load_checkpoint(previous_path(path)).extra["step"] == "1"


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupted_file_raises_clear_error_and_previous_is_still_there(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model(0).state_dict(), ARCH, extra={"step": "1"})
    save_checkpoint(path, _model(1).state_dict(), ARCH, extra={"step": "2"})
    data = path.read_bytes()
    damaged = {"truncate": data[: len(data) // 2], "empty": b"",
               "flip": data[:-10] + bytes([data[-10] ^ 0x01]) + data[-9:],
               "garbage": b"\xff" * 64}[damage]
    path.write_bytes(damaged)
    with pytest.raises(CheckpointCorrupted, match="previous checkpoint is still at"):
        load_checkpoint(path)
    ckpt, used = load_with_fallback(path, ARCH)
    assert used == previous_path(path) and ckpt.extra["step"] == "1"


def test_failed_write_leaves_old_checkpoint_intact(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model(0).state_dict(), ARCH, extra={"step": "1"})
    with pytest.raises(CheckpointError):
        save_checkpoint(path, _model(1).state_dict(), ARCH, extra={"step": 2})  # type: ignore[dict-item]
    assert load_checkpoint(path).extra["step"] == "1"


def test_missing_file_raises_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_crash_before_rename_leaves_old_checkpoint_and_no_temp_file(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model(0).state_dict(), ARCH, extra={"step": "1"})

    def power_cut(src: str, dst: str) -> None:
        raise OSError("simulated power cut")

    monkeypatch.setattr("app.node.model.checkpoint.os.replace", power_cut)
    with pytest.raises(CheckpointError, match="simulated power cut"):
        save_checkpoint(path, _model(1).state_dict(), ARCH, extra={"step": "2"})
    monkeypatch.undo()
    assert load_checkpoint(path).extra["step"] == "1"
    assert not list(tmp_path.glob(".*.tmp"))
