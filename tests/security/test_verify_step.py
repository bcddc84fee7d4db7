"""The stage protocol's VerifyStep: a verifier's request for a committed training step is typed,
versioned, signed and bound to the prover; each kind of bad input is refused with its own status
before the step log is asked anything, and a reply past the verifier's cap is not read."""

from __future__ import annotations

import grpc
import pytest

from app.node.p2p.auth import sign_message
from app.node.p2p.errors import PeerRejected, ProtocolMismatch
from app.node.p2p.protocol import STAGE_PROTOCOL_VERSION, pb2
from app.node.p2p.services import MAX_VERIFY_STEP, VERIFY_STEP
from tests.p2p.helpers import run, swarm

PROOF = "ab" * 32
BLOB = bytes(range(256)) * 1024  # 256 KiB: several transport chunks


def _prover(node) -> list[tuple[bytes, str, int | None]]:  # noqa: ANN001 - a P2PNode
    """Serves one proof's step 3 and its leaves; records every request the handler saw."""
    asked: list[tuple[bytes, str, int | None]] = []

    async def serve(caller: bytes, proof_id: str, step: int | None) -> tuple[bytes, bytes] | None:
        asked.append((caller, proof_id, step))
        if proof_id != PROOF or step not in (None, 3):
            return None
        return (b'{"leaves": []}', b"") if step is None else (b'{"step": 3}', BLOB)

    node.set_verify_handler(serve)
    return asked


async def _raw(caller, target, request: pb2.VerifyStepRequest, recipient: bytes | None = None) -> None:  # noqa: ANN001
    sign_message(caller.key, VERIFY_STEP, request, target.node_id if recipient is None else recipient)
    async for _ in caller.client.stream(target.address, VERIFY_STEP, [request], 5):
        pass


def _request(**fields: object) -> pb2.VerifyStepRequest:
    base = {"stage_version": STAGE_PROTOCOL_VERSION, "proof_id": bytes.fromhex(PROOF), "step": 3}
    return pb2.VerifyStepRequest(**{**base, **fields})


def test_a_signed_request_gets_the_step_in_chunks_and_the_handler_knows_the_caller() -> None:
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (verifier, prover)):
            asked = _prover(prover)
            header, blob = await verifier.verify_step(prover.address, PROOF, 3, 5, max_bytes=len(BLOB))
            assert (header, blob) == (b'{"step": 3}', BLOB)
            assert await verifier.verify_step(prover.address, PROOF, None, 5, max_bytes=1) == (b'{"leaves": []}', b"")
            assert asked == [(verifier.key.public_key.data, PROOF, 3), (verifier.key.public_key.data, PROOF, None)]

    run(scenario())


@pytest.mark.parametrize(("fields", "code", "words"), [
    ({"proof_id": b"\1" * 31}, grpc.StatusCode.INVALID_ARGUMENT, "32 bytes"),
    ({"proof_id": b""}, grpc.StatusCode.INVALID_ARGUMENT, "32 bytes"),
    ({"step": MAX_VERIFY_STEP + 1}, grpc.StatusCode.INVALID_ARGUMENT, "out of range"),
    ({"step": 2, "leaves_only": True}, grpc.StatusCode.INVALID_ARGUMENT, "leaves_only"),
    ({"step": 4}, grpc.StatusCode.NOT_FOUND, "no committed step"),
    ({"proof_id": b"\2" * 32}, grpc.StatusCode.NOT_FOUND, "no committed step"),
])
def test_bad_input_is_refused_with_its_own_status(fields: dict, code: grpc.StatusCode, words: str) -> None:
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (verifier, prover)):
            asked = _prover(prover)
            with pytest.raises(PeerRejected) as err:
                await _raw(verifier, prover, _request(**fields))
            assert err.value.code == code and words in err.value.reason
            assert len(asked) == (1 if code == grpc.StatusCode.NOT_FOUND else 0)  # refused before the log

    run(scenario())


def test_another_stage_protocol_version_is_refused_naming_both() -> None:
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (verifier, prover)):
            asked = _prover(prover)
            with pytest.raises(ProtocolMismatch) as err:
                await _raw(verifier, prover, _request(stage_version=STAGE_PROTOCOL_VERSION + 7))
            assert f"version {STAGE_PROTOCOL_VERSION + 7}" in str(err.value)
            assert f"version {STAGE_PROTOCOL_VERSION}" in str(err.value) and asked == []

    run(scenario())


def test_unsigned_or_for_another_node_is_refused_unprocessed() -> None:
    async def scenario() -> None:
        async with swarm(3, tracker=False) as (_, (verifier, prover, other)):
            asked = _prover(prover)
            with pytest.raises(PeerRejected) as err:
                async for _ in verifier.client.stream(prover.address, VERIFY_STEP, [_request()], 5):
                    pass
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(PeerRejected) as err:
                await _raw(verifier, prover, _request(), recipient=other.node_id)
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and asked == []

    run(scenario())


def test_a_node_without_a_step_log_says_unimplemented_and_a_reply_past_the_cap_is_refused() -> None:
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (verifier, prover)):
            with pytest.raises(PeerRejected) as err:
                await verifier.verify_step(prover.address, PROOF, 3, 5, max_bytes=len(BLOB))
            assert err.value.code == grpc.StatusCode.UNIMPLEMENTED
            _prover(prover)
            with pytest.raises(PeerRejected) as err:
                await verifier.verify_step(prover.address, PROOF, 3, 5, max_bytes=len(BLOB) - 1)
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED

    run(scenario())
