from app.crypto.keys import _ORDER, PrivateKey, is_valid_address, verify

KEY = PrivateKey((42).to_bytes(32, "big"))


def test_signature_verifies_only_for_its_message_and_key():
    sig = KEY.sign(b"pay 5")
    assert verify(KEY.public_key.data, b"pay 5", sig)
    assert not verify(KEY.public_key.data, b"pay 6", sig)
    assert not verify(PrivateKey((43).to_bytes(32, "big")).public_key.data, b"pay 5", sig)


def test_signatures_are_low_s_and_high_s_twins_are_refused():
    for i in range(20):
        sig = KEY.sign(b"m%d" % i)
        s = int.from_bytes(sig[32:], "big")
        assert s <= _ORDER // 2
        twin = sig[:32] + (_ORDER - s).to_bytes(32, "big")
        assert not verify(KEY.public_key.data, b"m%d" % i, twin)


def test_address_checksum_catches_a_typo():
    address = KEY.address
    assert is_valid_address(address)
    flipped = address[:10] + ("a" if address[10] != "a" else "b") + address[11:]
    assert not is_valid_address(flipped)
    assert not is_valid_address("xx" + address[2:])


def test_node_id_is_sha256_of_the_public_key():
    import hashlib

    assert KEY.node_id == hashlib.sha256(KEY.public_key.data).digest()
