"""Tunable numbers of the P2P layer, with the reasoning for each default.

Tests and devnets shrink the durations; the code path stays the same (DESIGN.md §4). This is
also the schema of config.toml's ``[p2p]`` section (app/node/schema.py): a new setting is one
annotated field here (``name: Seconds = 1.0``), and the file then accepts and checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Ge, Gt, Lt

from app.node.schema import STRICT, ConfigError, parse

MIB = 1 << 20

Size = Annotated[int, Ge(1)]
"""A count or a number of bytes: 0 or less would refuse everything or hang a transfer."""
Seconds = Annotated[float, Gt(0)]
PerSecond = Annotated[float, Gt(0)]
Penalty = Annotated[float, Lt(0)]
"""Scores only drop on bad behaviour; a positive 'penalty' would reward it."""


class P2PConfigError(ConfigError):
    """A ``[p2p]`` setting is unknown, of the wrong type or out of range; the message names it."""


@dataclass(frozen=True, kw_only=True)
class P2PConfig:
    __pydantic_config__ = STRICT
    # --- gRPC limits (PLATFORM.md: default 4 MiB refuses bigger messages; we stream 1 MiB
    # chunks, so 8 MiB leaves room for headers and small unary payloads, no more).
    max_message_bytes: Size = 8 * MIB
    chunk_bytes: Size = 1 * MIB
    max_tensor_elements: Size = 1 << 30  # 1 G elements (the stream cap below binds first)
    max_stream_bytes: Size = 1024 * MIB  # the sum of all tensors in one stream (hard cap, budget.py)
    # --- bounded resources per peer (budget.py): declared bytes are reserved before buffering
    max_streams_per_peer: Size = 32  # a driver keeps several micro-batches in flight per stage
    max_inflight_bytes_per_peer: Size = 1024 * MIB
    max_inflight_bytes: Size = 2048 * MIB  # every peer together: fresh keys and addresses are cheap
    stream_stall_timeout_s: Seconds = 30.0  # no chunk for this long ends a tensor stream
    max_meta_bytes: Size = 64 * 1024
    max_gossip_payloads: Size = 1024
    max_gossip_bytes: Size = 4 * MIB
    # --- deadlines (every RPC has one; STYLE.md)
    rpc_timeout_s: Seconds = 5.0
    tls_handshake_timeout_s: Seconds = 2.0  # the identity probe before a new channel (tls.py)
    dht_rpc_timeout_s: Seconds = 2.0
    # --- request signatures: timestamps this far from our clock are refused; nonces are
    # remembered for twice the window so any replay inside it is caught.
    auth_window_s: Seconds = 60.0
    # --- Kademlia (Maymounkov & Mazieres 2002): k = 20, alpha = 3; values live 1 h and are
    # republished by their publisher every 20 min (a third of the TTL: two misses survive).
    k: Size = 20
    alpha: Size = 3
    value_ttl_s: Seconds = 3600.0
    republish_interval_s: Seconds = 1200.0
    refresh_interval_s: Seconds = 600.0
    max_values_per_key: Size = 256
    contact_fresh_s: Seconds = 60.0  # a full bucket's oldest contact that answered this recently is not pinged
    max_stored_keys: Size = 100_000
    max_store_bytes: Size = 64 * MIB  # all values held for others together
    # --- tracker and layer registry heartbeats (DESIGN.md: 30 s heartbeats, offline after 120 s)
    heartbeat_interval_s: Seconds = 30.0
    heartbeat_timeout_s: Seconds = 120.0
    # --- swarm router (DESIGN.md §4, Petals): 200 ms to a replica; bans 1 s doubling to 60 s
    failover_timeout_s: Seconds = 0.2
    stage_keepalive_s: Seconds = 0.05  # server "still computing" beat, well under the failover
    stage_timeout_s: Seconds = 300.0
    max_stage_attempts: Size = 4
    holders_cache_s: Seconds = 1.0  # how long the router reuses a who_holds answer
    ban_initial_s: Seconds = 1.0
    ban_max_s: Seconds = 60.0
    # --- abuse control: a token bucket per peer and a score that drops on garbage
    rate_per_s: PerSecond = 500.0
    rate_burst: PerSecond = 1000.0
    score_drop_threshold: Penalty = -20.0
    score_bad_signature: Penalty = -5.0
    score_malformed: Penalty = -2.0
    drop_duration_s: Seconds = 300.0
    # --- NAT: a node the tracker cannot dial back tries a UPnP mapping, then a relay (seed 002)
    use_upnp: bool = True
    upnp_timeout_s: Seconds = 2.0
    upnp_ssdp: str = "239.255.255.250:1900"  # SSDP multicast group; tests point it at a local gateway
    # --- hole punching (holepunch.py, libp2p DCUtR): a relayed peer is tried directly in the
    # background; DCUtR retries 3 times and 97.6 % of its successes came on the first try.
    hole_punching: bool = True
    punch_attempts: Size = 3
    punch_window_s: Seconds = 3.0  # covers a dropped first SYN's retransmit after 1 s
    punch_retry_after_s: Seconds = 600.0  # a peer whose attempts all failed stays relayed this long
    # --- LAN discovery (lan.py): advertise on mDNS and dial nodes found there, checked like any peer
    lan_discovery: bool = True
    lan_wait_s: Annotated[float, Ge(0)] = 5.0
    """A node no tracker answered looks for peers on this network this long (ending at the first
    one found) before it starts a genesis network of its own: mDNS answers within a second or two
    on a home network, and a node found later still joins (it trains with the one it found)."""

    def __post_init__(self) -> None:
        if self.chunk_bytes > self.max_message_bytes:
            raise P2PConfigError(f"p2p: chunk_bytes {self.chunk_bytes} must fit in max_message_bytes "
                                 f"{self.max_message_bytes}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> P2PConfig:
        """The ``[p2p]`` section; P2PConfigError names each bad key in one line."""
        try:
            return parse(cls, raw or {}, prefix="p2p")
        except ConfigError as exc:
            raise P2PConfigError(str(exc)) from None
