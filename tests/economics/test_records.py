import json

import pytest

from app.node.economics.records import MAX_RECORD_BYTES, InvalidRecord, Record, canonical_json

from .helpers import ALICE, BOB, T0, Devnet

NET = Devnet()


def _transfer() -> Record:
    return NET.transfer(ALICE, BOB, 5_000, T0, seq=1)


def _mutate(raw: bytes, change) -> bytes:
    doc = json.loads(raw)
    change(doc)
    return canonical_json(doc)


def test_record_round_trips_through_canonical_bytes():
    record = _transfer()
    parsed = Record.from_bytes(record.to_bytes())
    assert parsed.record_id == record.record_id
    assert parsed.to_bytes() == record.to_bytes()
    assert parsed.author_address == ALICE.address


def test_signing_is_deterministic_so_ids_and_bytes_repeat():
    assert _transfer().to_bytes() == _transfer().to_bytes()


def test_forged_amount_fails_signature_check():
    forged = _mutate(_transfer().to_bytes(), lambda d: d["body"].update(amount=5_000_000))
    with pytest.raises(InvalidRecord, match="signature"):
        Record.from_bytes(forged)


def test_record_signed_by_another_key_is_refused():
    record = _transfer()
    forged = _mutate(record.to_bytes(), lambda d: d.update(author=BOB.public_key.data.hex()))
    with pytest.raises(InvalidRecord, match="signature"):
        Record.from_bytes(forged)


def test_high_s_signature_is_refused():
    from app.crypto.keys import _ORDER

    record = _transfer()
    r, s = record.signature[:32], int.from_bytes(record.signature[32:], "big")
    malleated = r + (_ORDER - s).to_bytes(32, "big")
    raw = _mutate(record.to_bytes(), lambda d: d.update(sig=malleated.hex()))
    with pytest.raises(InvalidRecord, match="signature"):
        Record.from_bytes(raw)


@pytest.mark.parametrize("change, reason", [
    (lambda d: d.update(v=3), "unknown version"),
    (lambda d: d.update(kind="reward"), "derived"),
    (lambda d: d.update(kind="teleport"), "unknown kind"),
    (lambda d: d["body"].update(amount="5000"), "transfer.amount"),
    (lambda d: d["body"].update(amount=True), "transfer.amount"),
    (lambda d: d["body"].update(amount=-1), "transfer.amount"),
    (lambda d: d["body"].update(to="ns1" + "0" * 48), "address"),
    (lambda d: d["body"].update(extra=1), "exactly the fields"),
    (lambda d: d.pop("seq"), "fields must be exactly"),
    (lambda d: d.update(seq=0), "integer in"),
])
def test_malformed_fields_are_refused_with_a_reason(change, reason):
    raw = _mutate(_transfer().to_bytes(), change)
    with pytest.raises(InvalidRecord, match=reason):
        Record.from_bytes(raw)


def test_non_canonical_encoding_is_refused():
    raw = json.dumps(json.loads(_transfer().to_bytes()), indent=1).encode()
    with pytest.raises(InvalidRecord, match="canonical"):
        Record.from_bytes(raw)


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"[]", b'{"a":1.5}', b"null", b'{"v":1,"v":1}',
                                 b"{" * 100_000, b"x" * (MAX_RECORD_BYTES + 1)])
def test_garbage_input_raises_invalid_record_never_another_error(raw):
    with pytest.raises(InvalidRecord):
        Record.from_bytes(raw)
