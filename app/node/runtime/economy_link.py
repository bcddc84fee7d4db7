"""EconomyLink: plugs the lead's EconomyService (economy.py) into the node runtime.

Work reports flow from the trainer's steps (the runtime's StepReports) into ``on_work``; ledger records gossip on the
P2P ``ledger`` topic; wallet commands and wallet/ledger queries are answered off the loop thread.
The economy is an add-on to training: if it cannot start (no usable keystore, a broken ledger
file), the node logs why and trains on without rewards rather than stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from app.crypto.keys import PublicKey, address_from_public_key
from app.node.events import ErrorOccurred, Event
from app.node.runtime.network import NetworkService
from app.node.runtime_api import RuntimeContext

log = logging.getLogger("neuroshard.runtime.economy")


class EconomyLink:
    def __init__(self, ctx: RuntimeContext, net: NetworkService, key: Any) -> None:
        self.ctx, self.net = ctx, net
        self.service: Any = None
        self._task: asyncio.Task[None] | None = None
        try:
            from app.node.runtime.economy import EconomyService
            from app.node.runtime.ledger_gossip import GOSSIP_TIMEOUT_S, GOSSIP_TOPIC

            self.service = EconomyService(key, ctx.config, ctx.emit, ctx.hardware.tier.value)
        except Exception as exc:  # rewards are optional; training is not
            log.exception("economy not started")
            ctx.emit(ErrorOccurred(message=f"rewards are off for this run: {exc}", fatal=False))
            return
        net.node.set_gossip_handler(GOSSIP_TOPIC, self.service.on_gossip)
        net.node.set_verify_handler(self.service.on_verify_step)
        self._topic, self._timeout = GOSSIP_TOPIC, GOSSIP_TIMEOUT_S

    def start(self, verify_arch: Callable[[], Any] | None = None) -> None:
        """Starts the epoch/gossip loop; with ``verify_arch`` (mode "verify": the network's current
        architecture) the node also re-checks other nodes' proofs."""
        if self.service is None:
            return
        if verify_arch is not None:
            self.service.start_verifying(verify_arch, self._fetch_sample)

        async def send(peer: Any, payloads: list[bytes]) -> list[bytes]:
            return await self.net.node.gossip(peer, self._topic, payloads, self._timeout)

        # Gossip goes to the peers known at each round: none while the node is alone, and a lone
        # node that finds one later (on the LAN, runtime/network.py) starts sharing its ledger then.
        self._task = asyncio.ensure_future(self.service.run(
            self.ctx.control.sleep, lambda: list(self.net.known.values()), send))
        self._task.add_done_callback(_report_end)

    async def _fetch_sample(self, author: bytes, proof_id: str, step: int) -> list[bytes]:
        """Asks the prover (by its public key) for one committed step (the stage protocol's VerifyStep)."""
        from app.node.runtime.verification import LEAVES_ONLY, MAX_SAMPLE_BYTES

        peer = self.net.known.get(PublicKey(author).node_id)
        if peer is None:
            return []  # not reachable from here: the check fails as unavailable
        header, blob = await self.net.node.verify_step(peer, proof_id, None if step == LEAVES_ONLY else step,
                                                       self._timeout * 4, MAX_SAMPLE_BYTES)
        return [header] if step == LEAVES_ONLY else [header, blob]

    def on_work(self, step: Any) -> None:
        """A step this node applied (any thread): the work of the next training proof."""
        if self.service is not None:
            self.service.on_work(step)

    def on_async_merged(self, layer_range: tuple[int, int], merged: tuple[tuple[str, int], ...]) -> None:
        """An outer step on ``layer_range`` merged these async contributions ((node id hex,
        batches)): this holder owes each contributor an async receipt. A contributor is named by
        its public key, which the receipt's address comes from; one this node no longer knows is
        skipped (it cannot be paid through an address nobody can check)."""
        if self.service is None:
            return
        owed = []
        for node_id, batches in merged:
            peer = self.net.known.get(bytes.fromhex(node_id))
            if peer is None:
                log.info("merged async work of %s, which is no longer known: no receipt", node_id[:12])
                continue
            owed.append((address_from_public_key(peer.public_key), batches))
        first, end = layer_range
        self.service.on_async_merged(first, end - first, owed)

    def staked_units(self) -> int:
        """This node's stake in micro-NEURO (0 while rewards are off)."""
        return self.service.ledger.balance(self.service.key.address).staked if self.service is not None else 0

    def proposals(self) -> list[Any]:
        """The governance proposals in this node's ledger (none while rewards are off)."""
        return self.service.ledger.proposals() if self.service is not None else []

    def on_forward(self, stage: Any, driver: str, step: int, mb: int, inputs: list[Any], output: Any) -> None:
        """The stage's forward hook: PoNW keeps what this node's training proofs commit to
        (runtime/verification.py)."""
        if self.service is not None:
            self.service.steps.on_forward(stage, driver, step, mb, inputs, output)

    def on_backward(self, stage: Any, driver: str, step: int, mb: int, grad_out: Any) -> None:
        """The stage's backward hook (the output gradients a verifier re-runs the backward with)."""
        if self.service is not None:
            self.service.steps.on_backward(stage, driver, step, mb, grad_out)

    def on_applied(self, stage: Any, info: Any) -> None:
        """The stage's hook after each optimizer step (the weights after, for the step's proof)."""
        if self.service is not None:
            self.service.steps.on_applied(stage, info)

    def handles(self, command: Event | Any) -> bool:
        return self.service is not None and self.service.handles(command)

    async def handle(self, command: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self.service.handle, command)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.service is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(None, self.service.close_epoch)
            self.service.close()


def _report_end(task: asyncio.Task[None]) -> None:
    """The epoch loop ended by itself: say why at once (a full disk under the ledger must stop
    the node, app/node/faults.py), rather than when the task is collected."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the economy loop stopped: rewards are off for this run", exc_info=task.exception())
