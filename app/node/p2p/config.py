"""Tunable numbers of the P2P layer, with the reasoning for each default.

Tests and devnets shrink the durations; the code path stays the same (DESIGN.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class P2PConfig:
    # --- gRPC limits (PLATFORM.md: default 4 MiB refuses bigger messages; we stream 1 MiB
    # chunks, so 8 MiB leaves room for headers and small unary payloads, no more).
    max_message_bytes: int = 8 * MIB
    chunk_bytes: int = 1 * MIB
    max_tensor_elements: int = 1 << 30  # 1 G elements (the stream cap below binds first)
    max_stream_bytes: int = 1024 * MIB  # the sum of all tensors in one stream (hard cap, budget.py)
    # --- bounded resources per peer (budget.py): declared bytes are reserved before buffering
    max_streams_per_peer: int = 8
    max_inflight_bytes_per_peer: int = 1024 * MIB
    max_inflight_bytes: int = 2048 * MIB  # every peer together: fresh keys and addresses are cheap
    stream_stall_timeout_s: float = 30.0  # no chunk for this long ends a tensor stream
    max_meta_bytes: int = 64 * 1024
    max_gossip_payloads: int = 1024
    max_gossip_bytes: int = 4 * MIB
    # --- deadlines (every RPC has one; STYLE.md)
    rpc_timeout_s: float = 5.0
    tls_handshake_timeout_s: float = 2.0  # the identity probe before a new channel (tls.py)
    dht_rpc_timeout_s: float = 2.0
    # --- request signatures: timestamps this far from our clock are refused; nonces are
    # remembered for twice the window so any replay inside it is caught.
    auth_window_s: float = 60.0
    # --- Kademlia (Maymounkov & Mazieres 2002): k = 20, alpha = 3; values live 1 h and are
    # republished by their publisher every 20 min (a third of the TTL: two misses survive).
    k: int = 20
    alpha: int = 3
    value_ttl_s: float = 3600.0
    republish_interval_s: float = 1200.0
    refresh_interval_s: float = 600.0
    max_values_per_key: int = 256
    contact_fresh_s: float = 60.0  # a full bucket's oldest contact that answered this recently is not pinged
    max_stored_keys: int = 100_000
    max_store_bytes: int = 64 * MIB  # all values held for others together
    # --- tracker and layer registry heartbeats (DESIGN.md: 30 s heartbeats, offline after 120 s)
    heartbeat_interval_s: float = 30.0
    heartbeat_timeout_s: float = 120.0
    # --- swarm router (DESIGN.md §4, Petals): 200 ms to a replica; bans 1 s doubling to 60 s
    failover_timeout_s: float = 0.2
    stage_keepalive_s: float = 0.05  # server "still computing" beat, well under the failover
    stage_timeout_s: float = 300.0
    max_stage_attempts: int = 4
    holders_cache_s: float = 1.0  # how long the router reuses a who_holds answer
    ban_initial_s: float = 1.0
    ban_max_s: float = 60.0
    # --- abuse control: a token bucket per peer and a score that drops on garbage
    rate_per_s: float = 500.0
    rate_burst: float = 1000.0
    score_drop_threshold: float = -20.0
    score_bad_signature: float = -5.0
    score_malformed: float = -2.0
    drop_duration_s: float = 300.0
    # --- NAT: a node the tracker cannot dial back tries a UPnP mapping, then a relay (seed 002)
    use_upnp: bool = True
    upnp_timeout_s: float = 2.0
    upnp_ssdp: str = "239.255.255.250:1900"  # SSDP multicast group; tests point it at a local gateway
