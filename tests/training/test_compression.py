from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from app.node.training.compression import (
    SCALE_SUFFIX,
    CompressionError,
    ErrorFeedback,
    decode_pseudo_gradient,
    encode_pseudo_gradient,
    encoded_nbytes,
)


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"blocks.0.w": torch.randn(64, 32, generator=g) * torch.logspace(-4, 0, 64)[:, None],
            "blocks.0.norm": torch.randn(32, generator=g) * 1e-3,
            "head.w": torch.randn(8, 4, 4, generator=g)}


def test_fp32_round_trip_is_exact():
    x = _tensors()
    out = decode_pseudo_gradient(encode_pseudo_gradient(x, "fp32"), "fp32")
    assert all(torch.equal(out[k], x[k]) for k in x)


def test_bf16_round_trip_is_within_bf16_precision():
    x = _tensors()
    out = decode_pseudo_gradient(encode_pseudo_gradient(x, "bf16"), "bf16")
    for k in x:
        assert torch.all((out[k] - x[k]).abs() <= x[k].abs() * 2**-8 + 1e-30)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.floats(1e-6, 1e3))
def test_int8_error_is_at_most_half_a_step_per_row(seed, magnitude):
    x = {k: v * magnitude for k, v in _tensors(seed).items()}
    enc = encode_pseudo_gradient(x, "int8")
    out = decode_pseudo_gradient(enc, "int8")
    for k, t in x.items():
        rows = t.reshape(t.shape[0], -1) if t.dim() >= 2 else t.reshape(1, -1)
        step = rows.abs().amax(1, keepdim=True) / 127
        err = (out[k].reshape(rows.shape) - rows).abs()
        assert torch.all(err <= step / 2 * (1 + 1e-5) + 1e-12)


def test_per_row_scales_keep_small_rows_accurate():
    x = _tensors()
    out = decode_pseudo_gradient(encode_pseudo_gradient(x, "int8"), "int8")
    smallest_row = x["blocks.0.w"][0]  # ~1e-4 of the largest row
    assert (out["blocks.0.w"][0] - smallest_row).abs().max() <= smallest_row.abs().max() / 254 * 1.001


def test_int8_is_about_four_times_smaller_than_fp32():
    x = _tensors()
    ratio = encoded_nbytes(encode_pseudo_gradient(x, "fp32")) / encoded_nbytes(encode_pseudo_gradient(x, "int8"))
    assert 3.5 < ratio <= 4.0


@pytest.mark.parametrize("scheme", ["bf16", "int8"])
def test_error_feedback_removes_the_bias_over_rounds(scheme):
    g = _tensors(1)
    rounds = 50
    feedback = ErrorFeedback()
    sent_fb = {k: torch.zeros_like(v) for k, v in g.items()}
    sent_plain = {k: torch.zeros_like(v) for k, v in g.items()}
    for _ in range(rounds):
        for k, v in decode_pseudo_gradient(encode_pseudo_gradient(g, scheme, feedback), scheme).items():
            sent_fb[k] += v
        for k, v in decode_pseudo_gradient(encode_pseudo_gradient(g, scheme), scheme).items():
            sent_plain[k] += v
    for k, v in g.items():
        one_round = (decode_pseudo_gradient(encode_pseudo_gradient(g, scheme), scheme)[k] - v).abs().max()
        err_fb = (sent_fb[k] - rounds * v).abs().max()
        err_plain = (sent_plain[k] - rounds * v).abs().max()
        assert err_fb <= 2 * one_round + 1e-6  # the residual carries over: no accumulation
        if one_round > 0:
            assert err_fb < err_plain / 5  # without feedback the same rounding adds up each round


def _encoded() -> dict[str, torch.Tensor]:
    return encode_pseudo_gradient({"w": torch.randn(4, 3), "b": torch.randn(3)}, "int8")


@pytest.mark.parametrize("mutate,reason", [
    (lambda e: e.update(w=e["w"].to(torch.int16)), "must be torch.int8"),
    (lambda e: e.pop("w" + SCALE_SUFFIX), "float32 scale"),
    (lambda e: e.pop("w"), "scales without a payload"),
    (lambda e: e.update({"w" + SCALE_SUFFIX: torch.ones(5)}), "expected 4 scales"),
    (lambda e: e.update({"w" + SCALE_SUFFIX: torch.full((4,), float("nan"))}), "finite"),
    (lambda e: e.update(w=torch.full((4, 3), -128, dtype=torch.int8)), "-128"),
])
def test_malformed_int8_payloads_are_refused(mutate, reason):
    enc = _encoded()
    mutate(enc)
    with pytest.raises(CompressionError, match=reason):
        decode_pseudo_gradient(enc, "int8")


def test_shapes_and_names_are_checked_against_the_expected_ones():
    enc = _encoded()
    with pytest.raises(CompressionError, match="expected"):
        decode_pseudo_gradient(enc, "int8", {"w": (3, 4), "b": (3,)})
    with pytest.raises(CompressionError, match="names differ"):
        decode_pseudo_gradient(enc, "int8", {"w": (4, 3)})
    bf = encode_pseudo_gradient({"w": torch.randn(2)}, "bf16")
    bf["w"][0] = float("inf")
    with pytest.raises(CompressionError, match="NaN or Inf"):
        decode_pseudo_gradient(bf, "bf16")
    with pytest.raises(CompressionError, match="unknown compression scheme"):
        encode_pseudo_gradient({"w": torch.randn(2)}, "fp8")
