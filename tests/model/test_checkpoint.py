"""Checkpoints round-trip, refuse other architectures loudly and survive corruption."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.node.model.architecture import ModelArchitecture
from app.node.model.checkpoint import (
    SET_ASIDE_MARK,
    ArchitectureMismatch,
    CheckpointCorrupted,
    CheckpointError,
    CheckpointsUnusable,
    load_checkpoint,
    load_newest_good,
    load_with_fallback,
    previous_path,
    save_checkpoint,
    set_aside_all,
    verify_checkpoint,
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


# --- the good copy is never destroyed (#15 item 2) -------------------------------------------


def _damage(path: Path, how: str) -> None:
    """Damage a checkpoint the ways disks and crashes do."""
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    if how == "flip":  # one bit in the tensor bytes
        data = data[:-10] + bytes([data[-10] ^ 0x01]) + data[-9:]
    elif how == "truncate":
        data = data[: len(data) // 2]
    elif how == "header":  # still valid JSON, one digit of the recorded metadata changed
        header = data[8:8 + header_len]
        i = header.index(b'"arch_version":"') + len(b'"arch_version":"')
        header = header[:i] + (b"7" if header[i:i + 1] != b"7" else b"8") + header[i + 1:]
        data = data[:8] + header + data[8 + header_len:]
    elif how == "header-garbage":
        data = data[:8] + b"\x00" * header_len + data[8 + header_len:]
    elif how == "empty":
        data = b""
    path.write_bytes(data)


DAMAGES = ["flip", "truncate", "header", "header-garbage", "empty"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_every_damage_fails_verification(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model(0).state_dict(), ARCH, extra={"step": "1"})
    assert verify_checkpoint(path) is None
    _damage(path, damage)
    assert verify_checkpoint(path) is not None
    with pytest.raises(CheckpointCorrupted):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", DAMAGES)
def test_corrupt_newest_is_set_aside_and_the_verified_copy_takes_its_place(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model(0).state_dict(), ARCH, extra={"step": "1"})
    save_checkpoint(path, _model(1).state_dict(), ARCH, extra={"step": "2"})
    _damage(path, damage)
    damaged = path.read_bytes()
    loaded = load_newest_good(path, ARCH)
    assert loaded.checkpoint.extra["step"] == "1" and loaded.path == path
    (aside,) = loaded.set_aside
    assert aside.original == path and SET_ASIDE_MARK in aside.now_at.name
    assert aside.now_at.read_bytes() == damaged  # kept byte for byte for diagnostics
    assert load_checkpoint(path).extra["step"] == "1" and not previous_path(path).exists()
    # the next save rotates the verified copy into .prev, never the damaged one
    save_checkpoint(path, _model(2).state_dict(), ARCH, extra={"step": "3"})
    assert load_checkpoint(previous_path(path)).extra["step"] == "1"


@pytest.mark.parametrize("damage", DAMAGES)
def test_rotation_never_moves_an_unverified_file_over_the_verified_prev(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model(0).state_dict(), ARCH, extra={"step": "1"})
    save_checkpoint(path, _model(1).state_dict(), ARCH, extra={"step": "2"})
    _damage(path, damage)  # bit rot after it was written: the node is still running
    aside = save_checkpoint(path, _model(2).state_dict(), ARCH, extra={"step": "3"})
    assert aside is not None and aside.now_at.exists()
    assert load_checkpoint(path).extra["step"] == "3"
    assert load_checkpoint(previous_path(path)).extra["step"] == "1"


def test_both_unusable_raises_naming_both_and_renames_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model(0).state_dict(), ARCH, extra={"step": "1"})
    save_checkpoint(path, _model(1).state_dict(), ARCH, extra={"step": "2"})
    _damage(path, "flip")
    _damage(previous_path(path), "truncate")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CheckpointsUnusable) as info:
        load_newest_good(path, ARCH)
    assert str(path) in str(info.value) and str(previous_path(path)) in str(info.value)
    assert set(info.value.paths) == {path, previous_path(path)}
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    kept = set_aside_all(path, "test")
    assert len(kept) == 2 and not path.exists() and not previous_path(path).exists()
    assert all(a.now_at.exists() for a in kept)


def test_version_one_files_without_a_content_hash_still_load(tmp_path: Path) -> None:
    from safetensors.torch import save as st_save

    state = {k: v.contiguous() for k, v in _model(0).state_dict().items()}
    import json

    from app.node.model.checkpoint import tensor_digest

    meta = {"format": "neuroshard-checkpoint/1", "architecture": json.dumps(ARCH.to_dict(), sort_keys=True),
            "arch_version": str(ARCH.version), "tokenizer_hash": "", "extra": "{}", "sha256": tensor_digest(state)}
    path = tmp_path / "old.safetensors"
    path.write_bytes(st_save(state, metadata=meta))
    assert load_checkpoint(path, ARCH).arch == ARCH
