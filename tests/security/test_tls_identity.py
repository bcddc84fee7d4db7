"""TLS on a node's port: plain text gets nothing, a pinned identity decides who may answer."""

import asyncio
import dataclasses
import datetime
import hashlib

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.crypto.keys import PrivateKey
from app.node.p2p.client import IdentityMismatch, Route
from app.node.p2p.dht_service import PING
from app.node.p2p.errors import PeerUnavailable
from app.node.p2p.protocol import PROTOCOL_VERSION, pb2
from app.node.p2p.records import parse_peer_record
from app.node.p2p.tls import (
    BINDING_OID,
    SERVER_NAME,
    TlsIdentity,
    TlsIdentityError,
    bound_node_id,
    fingerprint,
    probe,
)
from tests.p2p.helpers import FAST, run, swarm

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame


def _ping() -> pb2.PingRequest:
    return pb2.PingRequest(protocol_version=PROTOCOL_VERSION)


async def _plain_http2_answer(address: str) -> bytes:
    """What a plain-text HTTP/2 client gets back: the bytes the port sends after the preface."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(_PREFACE + _SETTINGS)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(1024), 3)
        except (ConnectionError, asyncio.TimeoutError):
            return b""
    finally:
        writer.close()


def test_plain_text_http2_gets_no_answer_while_a_pinned_tls_client_does():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (target, other)):
            answer = await _plain_http2_answer(target.address)
            # an HTTP/2 server answers the preface with its own SETTINGS frame (type 0x04)
            assert not (len(answer) >= 9 and answer[3] == 0x04), answer[:16]
            async with grpc.aio.insecure_channel(target.address) as plain:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await plain.unary_unary(PING, request_serializer=pb2.PingRequest.SerializeToString,
                                            response_deserializer=pb2.PingResponse.FromString)(_ping(), timeout=3)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            pinned = Route(target.address, expect=target.node_id)
            answer = await other.client.unary(pinned, PING, _ping(), 3)
            assert parse_peer_record(answer.record).node_id == target.node_id
            by_text = await other.client.unary(f"{target.node_id.hex()}@{target.address}", PING, _ping(), 3)
            assert parse_peer_record(by_text.record).node_id == target.node_id

    run(scenario())


def test_wrong_pinned_identity_is_refused_and_the_claimed_node_banned_while_the_target_keeps_serving():
    async def scenario():
        async with swarm(3, tracker=False) as (_, (target, caller, bystander)):
            claimed = PrivateKey.generate().node_id  # whom the caller was told listens there
            with pytest.raises(IdentityMismatch) as err:
                await caller.client.unary(Route(target.address, expect=claimed), PING, _ping(), 3)
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert caller.client.banned(claimed) and not caller.client.banned(target.address)
            with pytest.raises(IdentityMismatch):  # banned: refused without dialling
                await caller.client.unary(Route(bystander.address, expect=claimed), PING, _ping(), 3)
            # the honest server at that address is not punished for someone's false claim
            assert (await caller.ping(target.address)).node_id == target.node_id
            assert (await bystander.ping(target.address)).node_id == target.node_id

    run(scenario())


def test_tracker_dial_back_refuses_a_node_claiming_another_nodes_address():
    from app.node.p2p.auth import sign_message
    from app.node.p2p.records import sign_peer_record
    from app.node.p2p.tracker import REGISTER

    async def scenario():
        async with swarm(2) as (tracker, (honest, liar)):
            forged = sign_peer_record(liar.key, honest.address)  # "I am at the honest node's port"
            request = pb2.RegisterRequest(protocol_version=PROTOCOL_VERSION, record=forged.raw)
            sign_message(liar.key, REGISTER, request, b"")
            answer = await liar.client.unary(tracker.address, REGISTER, request, 5)
            assert not answer.reachable
            assert tracker.entries[liar.node_id].record.address == liar.address  # the claim was not kept
            honest.tracker_client.reachable = False
            await honest.tracker_client.register(tracker.address)  # the honest node is not banned
            assert honest.tracker_client.reachable and tracker.entries[honest.node_id].reachable

    run(scenario())


def test_record_fingerprint_matches_the_served_certificate_and_a_stale_record_still_reaches_its_node():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (target, caller)):
            record = target.record()
            assert record is not None and record.tls == target.tls.fingerprint
            der = await probe(target.address, 3)
            assert fingerprint(der) == record.tls and bound_node_id(der) == target.node_id
            # a record older than the node's current certificate: the binding, not the fingerprint,
            # proves who answers, so this is the right node (an impostor cannot bind its id)
            stale = dataclasses.replace(record, tls=hashlib.sha256(b"old cert").digest())
            answer = await caller.client.unary(stale, PING, _ping(), 3)
            assert parse_peer_record(answer.record).node_id == target.node_id

    run(scenario())


def _forged_certificate(binding: bytes) -> tuple[bytes, bytes]:
    """A certificate of a fresh TLS key carrying ``binding`` (PEM cert, PEM key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False))
    if binding:
        builder = builder.add_extension(x509.UnrecognizedExtension(BINDING_OID, binding), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_a_server_with_a_copied_or_missing_binding_is_refused_and_banned():
    victim = PrivateKey.generate()
    stolen = x509.load_pem_x509_certificate(TlsIdentity.create(victim).cert_pem).extensions \
        .get_extension_for_oid(BINDING_OID).value.value  # the victim's binding, copied by an impostor

    async def scenario(binding: bytes) -> None:
        cert_pem, key_pem = _forged_certificate(binding)
        server = grpc.aio.server()
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
        await server.start()
        address = f"127.0.0.1:{port}"
        try:
            async with swarm(1, tracker=False) as (_, (caller,)):
                with pytest.raises(IdentityMismatch):
                    await caller.client.unary(Route(address, expect=victim.node_id), PING, _ping(), 3)
                assert caller.client.banned(address)
        finally:
            await server.stop(None)

    run(scenario(stolen))
    run(scenario(b""))
    with pytest.raises(TlsIdentityError):
        bound_node_id(x509.load_pem_x509_certificate(_forged_certificate(stolen)[0])
                      .public_bytes(serialization.Encoding.DER))


def test_tracker_speaks_tls_its_pinned_address_is_honoured_and_a_wrong_pin_refused():
    async def scenario():
        async with swarm(2) as (tracker, (a, b)):
            assert {r.node_id for r in await a.tracker_client.peers(tracker.pinned_address)} == {a.node_id, b.node_id}
            wrong = f"{PrivateKey.generate().node_id.hex()}@{tracker.address}"
            with pytest.raises(IdentityMismatch):
                await b.tracker_client.peers(wrong)
            with pytest.raises(PeerUnavailable):
                await a.tracker_client.peers("zz@" + tracker.address)

    run(scenario())


def test_tls_identity_is_kept_in_the_data_dir_and_remade_for_another_key(tmp_path):
    key = PrivateKey.generate()
    first = TlsIdentity.load_or_create(key, tmp_path)
    again = TlsIdentity.load_or_create(key, tmp_path)
    assert again.cert_pem == first.cert_pem
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0
    other = TlsIdentity.load_or_create(PrivateKey.generate(), tmp_path)
    assert other.cert_pem != first.cert_pem
    assert bound_node_id(other.cert_der) != key.node_id


def test_node_started_with_a_tls_dir_serves_the_same_certificate_after_a_restart(tmp_path):
    from app.node.p2p.node import P2PNode

    async def scenario():
        key = PrivateKey.generate()
        fingerprints = []
        for _ in range(2):
            node = P2PNode(key, config=FAST, tls_dir=tmp_path)
            await node.start()
            try:
                fingerprints.append(fingerprint(await probe(node.address, 3)))
            finally:
                await node.stop()
        assert fingerprints[0] == fingerprints[1]

    run(scenario())


def test_tracker_with_a_data_dir_keeps_its_pinned_identity_across_restarts(tmp_path):
    from app.node.p2p.tracker import Tracker

    async def scenario():
        pins = []
        for _ in range(2):
            tracker = Tracker(0, config=FAST, data_dir=tmp_path)
            await tracker.start()
            try:
                assert bound_node_id(await probe(tracker.address, 3)) == tracker.key.node_id
                pins.append(tracker.pinned_address.partition("@")[0])
            finally:
                await tracker.stop()
        assert pins[0] == pins[1]
        assert (tmp_path / "tracker.key").stat().st_mode & 0o077 == 0

    run(scenario())


def test_an_unavailable_answer_from_a_connected_peer_keeps_its_pinned_channel():
    from app.node.p2p.errors import BUSY_PREFIX, PeerBusy, RpcRefusal

    async def busy(sender, payloads):
        raise RpcRefusal(grpc.StatusCode.UNAVAILABLE, BUSY_PREFIX + "paused by its volunteer")

    async def scenario():
        async with swarm(2, tracker=False) as (_, (target, caller)):
            target.set_gossip_handler("ledger", busy)
            await caller.ping(target.address)
            channel = await caller.client.channel(Route(target.address))
            with pytest.raises(PeerBusy):
                await caller.gossip(target.address, "ledger", [b"x"], timeout=3)
            assert await caller.client.channel(Route(target.address)) is channel  # not re-dialled

    run(scenario())
