"""``main.py generate``: through the network when one answers, else the local checkpoint; says which."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import tomli_w

from app.cli import main
from app.node.model.generation import generate
from app.node.tokenizer import NeuroTokenizer
from app.node.training.checkpointing import save_training_state
from app.node.training.config import TrainingConfig
from app.node.training.stage import StageWorker
from tests.inference.helpers import ARCH, reference_tokens
from tests.inference.test_sessions import network
from tests.p2p.helpers import run

TOKENIZER = NeuroTokenizer.genesis()


def _tiny_data_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_bytes(tomli_w.dumps({"training": {"model": "tiny"}}).encode())
    return path


def test_generate_uses_the_local_checkpoint_when_no_network_answers(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = _tiny_data_dir(tmp_path / "solo")
    from app.node.training.stage import build_shard

    stage = StageWorker(build_shard(ARCH, (0, ARCH.layers), with_embedding=True, with_head=True, seed=3),
                        TrainingConfig.from_dict({"model": "tiny"}))
    save_training_state(data_dir, stage, None, driver_step=0)
    prompt = TOKENIZER.encode("hello")
    expected = TOKENIZER.decode(generate([stage.shard], prompt, 6, temperature=0, eos_id=TOKENIZER.eos_id))

    code = main(["generate", "hello", "--max-tokens", "6", "--temperature", "0", "--data-dir", str(data_dir),
                 "--tracker", "127.0.0.1:9", "--join-wait", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out == expected + "\n"
    assert "from the local checkpoint" in err and "no live node holds the stage starting at layer 0" in err


def test_generate_without_network_or_whole_model_says_why_and_exits_1(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "hello", "--data-dir", str(_tiny_data_dir(tmp_path / "empty"))])
    _, err = capsys.readouterr()
    assert code == 1
    assert "no tracker given" in err and "there is no checkpoint" in err


def test_generate_goes_through_the_network_when_a_tracker_answers(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = _tiny_data_dir(tmp_path / "client")
    prompt = TOKENIZER.encode("hello")
    expected = TOKENIZER.decode(reference_tokens(6, prompt))

    async def scenario() -> int:
        async with network() as (_client, nodes, _services):
            argv = ["generate", "hello", "--max-tokens", "6", "--temperature", "0", "--data-dir", str(data_dir),
                    "--tracker", nodes[0].trackers[0]]
            return await asyncio.get_running_loop().run_in_executor(None, main, argv)

    code = run(scenario(), timeout=120)
    out, err = capsys.readouterr()
    assert code == 0
    assert out == expected + "\n"
    assert "through the network (3 stages, 6 tokens" in err


def test_generate_through_the_network_pays_from_the_data_dirs_wallet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from app.node.economics.ledger import Ledger
    from app.node.economics.records import Record
    from app.node.runtime.devnet_funding import devnet_genesis_settings
    from app.wallet.keystore import Keystore
    from tests.inference.test_market import CONFIG, _markets

    data_dir = tmp_path / "wallet"
    data_dir.mkdir()
    (data_dir / "config.toml").write_bytes(tomli_w.dumps({"training": {"model": "tiny"},
                                                          "economics": devnet_genesis_settings()}).encode())
    key = Keystore(data_dir, use_keyring=False, scrypt_n=2**10).create("wallet pw")
    monkeypatch.setenv("NEUROSHARD_PASSWORD", "wallet pw")
    services, ledgers, providers = _markets(tmp_path / "providers", key)  # the providers know the grant
    prompt = TOKENIZER.encode("hello")
    expected = TOKENIZER.decode(reference_tokens(6, prompt))

    async def scenario() -> int:
        async with network(services) as (_client, nodes, _services):
            argv = ["generate", "hello", "--max-tokens", "6", "--temperature", "0", "--data-dir", str(data_dir),
                    "--tracker", nodes[0].trackers[0]]
            return await asyncio.get_running_loop().run_in_executor(None, main, argv)

    try:
        code = run(scenario(), timeout=120)
        out, err = capsys.readouterr()
        assert code == 0, err
        assert out == expected + "\n"
        assert f"from wallet {key.address}" in err
        for ledger, provider in zip(ledgers, providers, strict=True):
            payments = [Record.from_bytes(raw) for raw in ledger.records_since(0)[0]]
            payments = [r for r in payments if r.kind == "transfer"]
            assert len(payments) == 6 and all(r.author_address == key.address for r in payments)
            assert all(r.body["to"] == provider for r in payments)
        own = Ledger(data_dir, CONFIG)  # the wallet's own ledger kept every payment it signed
        try:
            kept = [Record.from_bytes(raw) for raw in own.records_since(0)[0]]
            assert len(kept) == 6 * len(ledgers)
            assert sorted(r.seq for r in kept) == list(range(1, 6 * len(ledgers) + 1))  # no gap, no reuse
            assert own.next_seq(key.address) == 6 * len(ledgers) + 1
        finally:
            own.close()
    finally:
        for ledger in ledgers:
            ledger.close()
