"""coincurve and the pure-Python ecdsa backend must accept exactly the same signatures."""

import hashlib

import ecdsa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.crypto import keys

pytestmark = pytest.mark.skipif(keys._coincurve is None, reason="coincurve not installed")
ORDER = ecdsa.SECP256k1.order


def verify_both(public: bytes, message: bytes, signature: bytes) -> tuple[bool, bool]:
    fast = keys.verify(public, message, signature)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keys, "_coincurve", None)
        slow = keys.verify(public, message, signature)
    return fast, slow


@settings(max_examples=30, deadline=None)
@given(seed=st.binary(min_size=1, max_size=16), message=st.binary(max_size=64), flip=st.integers(0, 511))
def test_backends_agree_on_valid_tampered_and_high_s_signatures(seed, message, flip) -> None:
    key = keys.PrivateKey(hashlib.sha256(seed).digest())
    public = key.public_key.data
    signature = key.sign(message)
    assert verify_both(public, message, signature) == (True, True)
    tampered = bytearray(signature)
    tampered[flip // 8] ^= 1 << (flip % 8)
    assert verify_both(public, message, bytes(tampered)) == (False, False)
    s = int.from_bytes(signature[32:], "big")
    high_s = signature[:32] + (ORDER - s).to_bytes(32, "big")
    assert verify_both(public, message, high_s) == (False, False)
