"""``devnet --generate``: after training, generation through the running network equals in-process
greedy generation with the weights of the holders that served it."""

from __future__ import annotations

from app.node.devnet import run_devnet


def test_devnet_generates_through_the_network_after_training() -> None:
    summary = run_devnet(3, 4, timeout_s=300, generate="hello", generate_tokens=6)
    generated = summary["generation"]
    assert generated is not None and "error" not in generated, generated
    assert len(generated["tokens"]) == 6, generated
    assert generated["equals_in_process"] is True, generated
    assert len(generated["holders"]) >= 2, generated  # a chain of stages, not one node holding everything
    assert generated["tokens_per_s"] > 0, generated
    # the funded client paid every stage its locked price for each of the 6 tokens
    assert all(price > 0 for price in generated["prices_per_token"]), generated
    assert generated["price_paid"] == 6 * sum(generated["prices_per_token"]), generated
    assert all(code == 0 for code in summary["exit_codes"].values()), (summary["exit_codes"], summary["errors"])
