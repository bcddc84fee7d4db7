"""The network layer (seed 002): gRPC services, Kademlia DHT, tracker, swarm router, tensor codec, NAT.

Entry point: :class:`app.node.p2p.node.P2PNode`. Module map, bottom up:

- ``neuroshard.proto`` / ``protocol.py``: every message and service, the protocol version, the method table
- ``records.py``: signed peer records, layer announcements and DHT values (strict parsing)
- ``auth.py``: signed requests (canonical bytes, replay window); ``ratelimit.py``: budgets and scores
- ``tensor_codec.py`` / ``tensor_rpc.py``: raw little-endian tensors in 1 MiB chunks; stage calls
- ``routing.py`` (pure Kademlia) / ``dht.py`` (live DHT) / ``dht_service.py`` (its RPCs)
- ``server.py`` (gRPC edge) / ``client.py`` (outgoing calls) / ``relay.py`` (tunnels) / ``upnp.py``
- ``tracker.py`` / ``tracker_client.py`` / ``cli.py`` (``main.py tracker``)
- ``registry.py`` (who holds which layer) / ``router.py`` (stage choice, failover, bans)

It knows bytes, tensors, peers and signatures, never training: training registers handlers.
"""
