"""Server handlers and client transport of the DHT RPCs (Ping, FindNode, FindValue, Store).

Every DHT message names its sender by a signed peer record; the receiver verifies it (cached)
and learns the sender, so routing tables only ever hold self-certified contacts. Store changes
state and is signed as a request too; the value inside carries its publisher's own signature.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from app.crypto.keys import PrivateKey
from app.node.p2p.addresses import observed_host
from app.node.p2p.auth import ReplayGuard, sign_message, verify_message
from app.node.p2p.client import PeerClient
from app.node.p2p.config import P2PConfig
from app.node.p2p.dht import KademliaNode
from app.node.p2p.errors import MalformedMessage, PeerRejected, RpcRefusal
from app.node.p2p.protocol import PROTOCOL_VERSION, is_compatible, pb2
from app.node.p2p.records import InvalidRecord, PeerRecord, SignedValue, parse_peer_record, parse_value
from app.node.p2p.server import CallInfo, Dispatcher, unary

PING, FIND_NODE = "/neuroshard.v1.Dht/Ping", "/neuroshard.v1.Dht/FindNode"
FIND_VALUE, STORE = "/neuroshard.v1.Dht/FindValue", "/neuroshard.v1.Dht/Store"


def check_version(request: Any) -> None:
    if not is_compatible(request.protocol_version):
        raise RpcRefusal(grpc.StatusCode.FAILED_PRECONDITION,
                         f"protocol version {request.protocol_version} is not supported by this node "
                         f"(it speaks {PROTOCOL_VERSION}); update NeuroShard")


def raw_record(record: PeerRecord | None) -> bytes:
    return record.raw if record is not None else b""


def _records(raws: Any, limit: int) -> list[PeerRecord]:
    """Parse contacts from a peer's answer, skipping invalid ones (they never reach the table)."""
    out = []
    for raw in list(raws)[:limit]:
        try:
            out.append(parse_peer_record(raw))
        except InvalidRecord:
            continue
    return out


class DhtService:
    def __init__(self, dht: KademliaNode, record: Callable[[], PeerRecord | None], replay: ReplayGuard,
                 on_rtt: Callable[[bytes, float], None]) -> None:
        self.dht = dht
        self.record = record
        self.replay = replay
        self.on_rtt = on_rtt

    def install(self, dispatcher: Dispatcher) -> None:
        dispatcher.register(PING, unary(self.ping))
        dispatcher.register(FIND_NODE, unary(self.find_node))
        dispatcher.register(FIND_VALUE, unary(self.find_value))
        dispatcher.register(STORE, unary(self.store))

    def _sender(self, request: Any) -> bytes | None:
        check_version(request)
        if not request.sender:
            return None
        record = parse_peer_record(request.sender)
        self.dht.observe(record)
        return record.node_id

    async def ping(self, request: Any, info: CallInfo) -> Any:
        self._sender(request)
        return pb2.PingResponse(protocol_version=PROTOCOL_VERSION, record=raw_record(self.record()),
                                observed_host=observed_host(info.peer))

    async def find_node(self, request: Any, info: CallInfo) -> Any:
        sender = self._sender(request)
        if len(request.target) != 32:
            raise MalformedMessage("target must be a 32-byte id")
        return pb2.FindNodeResponse(protocol_version=PROTOCOL_VERSION,
                                    contacts=self.dht.closest_records(request.target, sender))

    async def find_value(self, request: Any, info: CallInfo) -> Any:
        sender = self._sender(request)
        if len(request.key) != 32:
            raise MalformedMessage("key must be 32 bytes")
        values, contacts = self.dht.handle_find_value(request.key, sender)
        return pb2.FindValueResponse(protocol_version=PROTOCOL_VERSION, values=values, contacts=contacts)

    async def store(self, request: Any, info: CallInfo) -> Any:
        check_version(request)
        verify_message(STORE, request, self.replay)
        self._sender(request)
        return pb2.StoreResponse(protocol_version=PROTOCOL_VERSION, stored=self.dht.handle_store(request.value))


class GrpcDhtTransport:
    """DhtTransport over the node's PeerClient (direct or relayed)."""

    def __init__(self, key: PrivateKey, client: PeerClient, config: P2PConfig,
                 record: Callable[[], PeerRecord | None], on_rtt: Callable[[bytes, float], None]) -> None:
        self.key, self.client, self.config = key, client, config
        self.record, self.on_rtt = record, on_rtt

    async def _call(self, contact: PeerRecord, path: str, request: Any) -> Any:
        start = time.monotonic()
        response = await self.client.unary(contact, path, request, self.config.dht_rpc_timeout_s)
        self.on_rtt(contact.node_id, (time.monotonic() - start) * 1000.0)
        return response

    async def ping(self, contact: PeerRecord) -> PeerRecord:
        response = await self._call(contact, PING, pb2.PingRequest(
            protocol_version=PROTOCOL_VERSION, sender=raw_record(self.record())))
        try:
            record = parse_peer_record(response.record)
        except InvalidRecord as exc:
            raise PeerRejected(f"ping answered with an invalid record: {exc}") from None
        if record.node_id != contact.node_id:
            raise PeerRejected("a different node answered at this address")
        return record

    async def find_node(self, contact: PeerRecord, target: bytes) -> list[PeerRecord]:
        response = await self._call(contact, FIND_NODE, pb2.FindNodeRequest(
            protocol_version=PROTOCOL_VERSION, sender=raw_record(self.record()), target=target))
        return _records(response.contacts, self.config.k)

    async def find_value(self, contact: PeerRecord, key: bytes) -> tuple[list[SignedValue], list[PeerRecord]]:
        response = await self._call(contact, FIND_VALUE, pb2.FindValueRequest(
            protocol_version=PROTOCOL_VERSION, sender=raw_record(self.record()), key=key))
        values = []
        for raw in list(response.values)[: self.config.max_values_per_key]:
            try:
                values.append(parse_value(raw))
            except InvalidRecord:
                continue
        return values, _records(response.contacts, self.config.k)

    async def store(self, contact: PeerRecord, value: SignedValue) -> bool:
        request = pb2.StoreRequest(protocol_version=PROTOCOL_VERSION, sender=raw_record(self.record()), value=value.raw)
        sign_message(self.key, STORE, request, contact.node_id)
        return bool((await self._call(contact, STORE, request)).stored)
