"""NEURO economics (seeds 001-002): signed records, the SQLite ledger, Proof of Neural Work,
rewards, stake and slashing, vocabulary governance and inference pricing.

Reading order: ``constants`` (every number, ``EconomicsConfig``) -> ``records`` (the signed wire
format) -> ``state`` / ``replay`` / ``handlers`` / ``settlement`` (balances as a pure function of
the set of records) -> ``ledger`` (SQLite storage and the gossip surface) -> ``ponw``,
``spotcheck``, ``rewards``, ``governance``, ``pricing`` (the rules) -> ``sync`` (anti-entropy
pull), ``verify`` and ``cli`` (``ledger verify|balance|history``).

Nothing here imports Qt, torch (except lazily in ``spotcheck``) or the P2P layer.
"""
