"""Layer registry: which live node holds which layers, answered from the DHT.

A node publishes one signed :class:`LayerAnnouncement` under the DHT key of every layer it holds
and refreshes it every heartbeat; the announcement's TTL is the heartbeat timeout, so a holder
that dies vanishes from ``who_holds`` within that timeout (DESIGN.md §4: heartbeats mark a holder
dead after a timeout). Readers check that the DHT value's publisher is the announcing node.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

from app.crypto.keys import PrivateKey
from app.node.p2p.config import P2PConfig
from app.node.p2p.dht import KademliaNode
from app.node.p2p.records import InvalidRecord, LayerAnnouncement, PeerRecord, parse_layer_announcement

MAX_PROBED_LAYERS = 4096


def layer_key(layer: int) -> bytes:
    return hashlib.sha256(b"neuroshard/layer/" + str(layer).encode()).digest()


class LayerRegistry:
    def __init__(self, dht: KademliaNode, key: PrivateKey, config: P2PConfig,
                 where: Callable[[], tuple[str, str]], latency: Callable[[bytes], float | None]) -> None:
        self.dht, self.key, self.config = dht, key, config
        self._where = where  # (address, relay) of this node right now
        self._latency = latency
        self.current: LayerAnnouncement | None = None

    async def announce(self, announcement: LayerAnnouncement) -> int:
        """Publish (and keep refreshing) ``announcement``; identity and time are filled in here.
        Returns how many remote DHT nodes stored it for its first layer."""
        if announcement.layer_start < 0 or announcement.layer_end <= announcement.layer_start:
            raise ValueError("layer range must satisfy 0 <= start < end")
        ttl = announcement.ttl if announcement.ttl != LayerAnnouncement.ttl else self.config.heartbeat_timeout_s
        self.current = LayerAnnouncement(announcement.layer_start, announcement.layer_end, announcement.tier,
                                         announcement.capacity, announcement.load, ttl)
        return await self.refresh()

    async def refresh(self) -> int:
        """Re-sign the current announcement with a fresh timestamp and store it again."""
        if self.current is None:
            return 0
        address, relay = self._where()
        signed = self.current.signed(self.key, address, relay)
        results = await asyncio.gather(*(
            self.dht.store(layer_key(layer), signed.raw, signed.ttl)
            for layer in range(signed.layer_start, signed.layer_end)))
        return results[0] if results else 0

    def withdraw(self) -> None:
        """Stop refreshing: the announcement expires within its TTL everywhere."""
        self.current = None

    async def who_holds(self, layer: int) -> list[PeerRecord]:
        """Live holders of ``layer``, one record per node, with our latency measurement."""
        holders: dict[bytes, PeerRecord] = {}
        for value in await self.dht.get_values(layer_key(layer)):
            try:
                ann = parse_layer_announcement(value.value)
            except InvalidRecord:
                continue
            if ann.public_key != value.public_key or not ann.is_live():
                continue
            if not ann.layer_start <= layer < ann.layer_end:
                continue
            record = ann.to_peer_record().with_latency(self._latency(ann.node_id))
            old = holders.get(record.node_id)
            if old is None or old.timestamp < record.timestamp:
                holders[record.node_id] = record
        return list(holders.values())

    async def holders_map(self, num_layers: int | None = None) -> dict[int, list[PeerRecord]]:
        """Holders of layers 0..num_layers-1; without a count, probes until a layer has none."""
        if num_layers is not None:
            answers = await asyncio.gather(*(self.who_holds(i) for i in range(num_layers)))
            return dict(enumerate(answers))
        out: dict[int, list[PeerRecord]] = {}
        for layer in range(MAX_PROBED_LAYERS):
            holders = await self.who_holds(layer)
            if not holders:
                break
            out[layer] = holders
        return out
