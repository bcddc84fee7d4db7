"""The honest "alone" state on the real runtime: with no peer the dashboard and the reachability
query say the node trains alone on its own genesis copy; when a peer appears, both say otherwise."""

from __future__ import annotations

import asyncio
import threading

from app.crypto.keys import PrivateKey
from app.node.events import Query
from app.node.p2p.config import P2PConfig
from app.node.p2p.node import P2PNode
from app.ui import plain_words
from tests.ui.helpers import runtime, wait_training


def ask(qtbot, gui, what: str) -> object:  # noqa: ANN001
    answers: list[object] = []
    gui.bridge.request(Query(what), answers.append, lambda message: answers.append(AssertionError(message)))
    qtbot.waitUntil(lambda: bool(answers), timeout=15_000)
    assert not isinstance(answers[0], AssertionError), answers[0]
    return answers[0]


class VisitingPeer:
    """A real P2P node on 127.0.0.1, in a thread of its own, that pings the GUI's node (as a peer
    joining through it would) and stays up until told to leave."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.node_id = ""
        self.joined = threading.Event()
        self.leave = threading.Event()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        async def visit() -> None:
            node = P2PNode(PrivateKey.generate(), config=P2PConfig(use_upnp=False))
            await node.start()
            try:
                self.node_id = node.node_id.hex()
                await node.ping(self.address)
                self.joined.set()
                while not self.leave.is_set():
                    await asyncio.sleep(0.05)
            finally:
                await node.stop()

        try:
            asyncio.run(visit())
        except BaseException as exc:  # reported to the test, which fails on it
            self.failed = exc
            self.joined.set()

    def stop(self) -> None:
        self.leave.set()
        self.thread.join(timeout=30)


def test_a_node_without_peers_says_it_trains_alone_until_a_peer_appears(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    page = gui.window.dashboard
    qtbot.waitUntil(lambda: page.alone_label.isVisible(), timeout=15_000)
    assert page.alone_label.text() == plain_words.TRAINING_ALONE
    # plain words on the page (#19), the expert term in the tooltip
    assert "its own copy" in page.alone_label.text() and "tracker address" in page.alone_label.text()
    # the three ways to connect: another computer on this network, a tracker, a friend's invite code
    assert "another computer on this network" in page.alone_label.text() and "invite code" in page.alone_label.text()
    assert "genesis" in page.alone_label.toolTip()
    answer = ask(qtbot, gui, "reachability")
    assert isinstance(answer, dict) and answer["alone"] is True and answer["peers"] == 0
    # the GUI tests' node listens on 127.0.0.1 only: discovery says why it is not looking
    assert answer["lan_discovery"].startswith("off: the node listens on 127.0.0.1")

    visitor = VisitingPeer(runtime(gui).net.node.address)
    try:
        assert visitor.joined.wait(30) and visitor.failed is None, visitor.failed
        qtbot.waitUntil(lambda: not page.alone_label.isVisible(), timeout=30_000)
        answer = ask(qtbot, gui, "reachability")
        assert answer["alone"] is False and answer["peers"] >= 1
        peers = ask(qtbot, gui, "peers")
        assert visitor.node_id in {p["node_id"] for p in peers}
        # the peer appears on the Network page too, in its table of computers
        network = gui.window.network
        qtbot.waitUntil(lambda: visitor.node_id in network.peers, timeout=15_000)
        assert network.table.rowCount() >= 1
    finally:
        visitor.stop()
