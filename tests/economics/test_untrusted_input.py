"""Whatever a peer sends, the ledger answers with a result and never raises."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.node.economics.constants import ConfigError, EconomicsConfig
from app.node.economics.genesis import new_devnet
from app.node.economics.ledger import Ledger
from app.node.economics.records import InvalidRecord, Record

from .helpers import ALICE, BOB, T0, Devnet

NET = Devnet()
VALID = NET.transfer(ALICE, BOB, 5, T0, seq=1).to_bytes()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_records_raise_only_invalid_record(data):
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    try:
        record = Record.from_bytes(bytes(raw))
    except InvalidRecord:
        return
    assert record.to_bytes() == bytes(raw)  # only a byte-identical record can survive


def test_ledger_answers_garbage_with_a_rejection(tmp_path):
    ledger = NET.ledger(tmp_path)
    results = ledger.submit_many([b"", b"{}", b"\x00" * 100, VALID[:-3], VALID.replace(b'"v":2', b'"v":9')])
    assert [r.status for r in results] == ["rejected"] * 5
    assert all(r.reason for r in results)
    ledger.close()


def test_config_from_toml_section_merges_partial_tables_and_refuses_unknown_keys():
    config = EconomicsConfig.from_dict({"rewards": {"data_per_sample": 20}, "epoch_ms": 5000})
    assert config.rewards["data_per_sample"] == 20 and config.rewards["uptime_per_minute"] == 100
    with pytest.raises(ConfigError, match="unknown"):
        EconomicsConfig.from_dict({"epoch_length": 5})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        EconomicsConfig.from_dict({"fee_burn_share": 1.5})


def test_new_devnet_genesis_is_accepted_only_on_its_own_network(tmp_path):
    config, _key, genesis = new_devnet({ALICE.address: 10}, network_id="devnet-a")
    own = Ledger(tmp_path / "a", config, clock=lambda: genesis.timestamp_ms / 1000)
    assert own.submit(genesis.to_bytes()).accepted and own.balance(ALICE.address).available == 10
    other_config, _, _ = new_devnet({BOB.address: 1}, network_id="devnet-b")
    other = Ledger(tmp_path / "b", other_config, clock=lambda: genesis.timestamp_ms / 1000)
    assert other.submit(genesis.to_bytes()).status == "rejected"
    own.close()
    other.close()
