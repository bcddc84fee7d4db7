"""Network: reachability (the node's self-test, in plain words with what to do) with a re-test, peers, layer coverage, the model's
architecture and the network's phase (seed 001: genesis, micro, small, ...), and what the node
is doing now."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.node.events import (
    ActivityChanged,
    LayersAssigned,
    NetworkChanged,
    PeerJoined,
    PeerLeft,
    Query,
    ReachabilityTested,
)
from app.ui import plain_words
from app.ui.bridge import EngineBridge
from app.ui.format import short_id
from app.ui.records import BadAnswer, PeerInfo, read_peers
from app.ui.widgets.coverage_bar import MIN_REPLICAS, CoverageBar
from app.ui.widgets.model_piece import ModelPiece
from app.ui.work_history import WorkHistory

PEER_COLUMNS = ("Computer", "Address", "Speed tier", "Layers", "Latency")


class NetworkPage(QWidget):
    title = "Network"

    def __init__(self, bridge: EngineBridge, history: WorkHistory, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.piece = ModelPiece(history)
        self.peers: dict[str, PeerInfo] = {}
        self.peers_loaded = False  # the node's own list answered at least once
        self.reach_label = QLabel("Not tested yet")
        self.reach_label.setWordWrap(True)
        self.retest_button = QPushButton("Test again")
        self.retest_button.setToolTip("Asks the tracker (when one is set) to call this computer back, and the "
                                      "router to open a port (UPnP) when allowed.")
        self.tested: ReachabilityTested | None = None
        self.invite_button = QPushButton("Show my invite code")
        self.invite_code = QLineEdit()
        self.invite_code.setReadOnly(True)
        self.invite_code.setPlaceholderText("an invite code for a friend appears here")
        self.invite_code.setToolTip(plain_words.INVITE_TERM)
        self.invite_label = QLabel()
        self.invite_label.setWordWrap(True)
        self.phase_label, self.arch_label = QLabel("—"), QLabel("—")
        self.activity_label = QLabel("—")
        self.coverage = CoverageBar()
        self.coverage_label = QLabel()
        self.table = QTableWidget(0, len(PEER_COLUMNS))
        self.table.setHorizontalHeaderLabels(PEER_COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.message = QLabel()
        self._build()
        self._connect()

    def _build(self) -> None:
        facts = QGroupBox("This node in the network")
        grid = QGridLayout(facts)
        reach = QHBoxLayout()
        reach.addWidget(self.reach_label, 1)
        reach.addWidget(self.retest_button)
        grid.addWidget(QLabel("Reachability"), 0, 0)
        grid.addLayout(reach, 0, 1)
        for row, (name, label) in enumerate((("Network phase", self.phase_label), ("Model", self.arch_label),
                                             ("Doing now", self.activity_label)), start=1):
            grid.addWidget(QLabel(name), row, 0)
            grid.addWidget(label, row, 1)
        coverage = QGroupBox(f"Copies of each layer in the network ({MIN_REPLICAS} or more is safe)")
        coverage.setToolTip("Replicas per layer: a layer held by fewer computers is lost for a while when one "
                            "of them leaves.")
        cov_layout = QVBoxLayout(coverage)
        cov_layout.addWidget(self.coverage)
        cov_layout.addWidget(self.coverage_label)
        invite = QGroupBox("Invite a friend")
        invite_layout = QVBoxLayout(invite)
        invite_row = QHBoxLayout()
        invite_row.addWidget(self.invite_code, 1)
        invite_row.addWidget(self.invite_button)
        invite_layout.addLayout(invite_row)
        invite_layout.addWidget(self.invite_label)
        peers = QGroupBox("Peers")
        QVBoxLayout(peers).addWidget(self.table)
        layout = QVBoxLayout(self)
        layout.addWidget(self.piece)
        layout.addWidget(facts)
        layout.addWidget(coverage)
        layout.addWidget(invite)
        layout.addWidget(peers, 1)
        layout.addWidget(self.message)

    def _connect(self) -> None:
        b = self.bridge
        self.retest_button.clicked.connect(self.retest)
        self.invite_button.clicked.connect(self.show_invite)
        b.network.connect(self.on_network)
        b.reachability.connect(self.on_reachability)
        b.layers.connect(self.on_layers)
        b.network.connect(self.piece.on_network)
        b.layers.connect(self.piece.on_layers)
        b.earnings.connect(self.piece.on_earnings)
        b.step.connect(self.piece.on_work)  # bound slots: disconnected when the page is deleted
        b.proof.connect(self.piece.on_work)
        b.activity.connect(self.on_activity)
        b.peer_joined.connect(self.on_peer_joined)
        b.peer_left.connect(self.on_peer_left)
        b.ready.connect(self.refresh_peers)
        for kind, slot in (("network", self.on_network), ("reachability", self.on_reachability),
                           ("layers", self.on_layers), ("activity", self.on_activity),
                           ("network", self.piece.on_network), ("layers", self.piece.on_layers),
                           ("earnings", self.piece.on_earnings)):
            latest = b.latest(kind)
            if latest is not None:
                slot(latest)

    def on_network(self, event: NetworkChanged) -> None:
        if event.relay and (self.tested is None or self.tested.relay != event.relay):
            self._say_reach(plain_words.reachability("relay", relay=event.relay))  # a relay newer than the test
        elif self.tested is None:
            self.show_reachability(event.reachable, event.relay)
        phase = plain_words.phase(event.phase)
        self.phase_label.setText(f"{phase.words[0].upper() + phase.words[1:]}; {event.peers} other "
                                 f"computer{'s' if event.peers != 1 else ''} seen")
        self.phase_label.setToolTip(f"{phase.tooltip} Now: {event.phase}.")
        self.coverage.set_replicas(event.replicas_per_layer)
        thin = sum(1 for r in event.replicas_per_layer if r < MIN_REPLICAS)
        self.coverage_label.setText(
            f"{len(event.replicas_per_layer)} layers; {thin} with fewer than {MIN_REPLICAS} copies"
            if event.replicas_per_layer else "")

    def show_reachability(self, reachable: bool, relay: str) -> None:
        if reachable:
            self.reach_label.setText("Reachable directly: peers connect to this computer")
        elif relay:
            self.reach_label.setText(f"Behind NAT: reachable through relay {relay}")
        else:
            self.reach_label.setText("Not reachable from outside: only outgoing connections work")

    def on_reachability(self, event: ReachabilityTested) -> None:
        self.tested = event
        self._say_reach(plain_words.reachability(event.verdict, address=event.address, relay=event.relay,
                                                 port=event.port, observed=event.observed,
                                                 lan_peers=event.lan_peers))

    def _say_reach(self, plain: plain_words.Plain) -> None:
        self.reach_label.setText(plain.words)
        self.reach_label.setToolTip(plain.tooltip)

    def on_layers(self, event: LayersAssigned) -> None:
        self.arch_label.setText(f"version {event.architecture_version}: {event.total_layers} layers × "
                                f"{event.hidden} hidden, {event.parameters / 1e6:.1f} M parameters")

    def on_activity(self, event: ActivityChanged) -> None:
        self.activity_label.setText(event.activity)

    def on_peer_joined(self, event: PeerJoined) -> None:
        self.peers[event.node_id] = PeerInfo(event.node_id, event.address, event.tier, event.layers, event.latency_ms)
        self._fill()

    def on_peer_left(self, event: PeerLeft) -> None:
        self.peers.pop(event.node_id, None)
        self._fill()

    def refresh_peers(self) -> None:
        def done(answer: object) -> None:
            try:
                self.peers = {p.node_id: p for p in read_peers(answer)}
            except BadAnswer as exc:
                self.message.setText(f"The node sent a peer list the app cannot read ({exc}).")
                return
            self.peers_loaded = True
            self._fill()

        self.bridge.request(Query("peers"), done, lambda m: self.message.setText(f"Peers unavailable: {m}"))

    def _fill(self) -> None:
        peers = sorted(self.peers.values(), key=lambda p: p.node_id)
        self.table.setRowCount(len(peers))
        for row, p in enumerate(peers):
            layers = f"{p.layers[0]}–{p.layers[1] - 1}" if p.layers[1] > p.layers[0] else "—"
            cells = (short_id(p.node_id, 16), p.address, p.tier or "?", layers, f"{p.latency_ms:.0f} ms")
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))

    def retest(self) -> None:
        self.retest_button.setEnabled(False)
        self.reach_label.setText("Testing…")

        def done(answer: object) -> None:
            # the node's ReachabilityTested event carries the result (on_reachability); the answer
            # only says the test ran
            self.retest_button.setEnabled(True)
            if not isinstance(answer, dict) or not isinstance(answer.get("verdict"), str):
                self.reach_label.setText("The node sent a test result the app cannot read.")
            elif self.tested is not None:
                self.on_reachability(self.tested)

        def failed(message: str) -> None:
            self.retest_button.setEnabled(True)
            self.reach_label.setText(f"Test failed: {message}")

        self.bridge.request(Query("reachability"), done, failed)

    def show_invite(self) -> None:
        """Ask the node for its invite code; without one, say why in plain words."""
        self.invite_button.setEnabled(False)

        def done(answer: object) -> None:
            self.invite_button.setEnabled(True)
            code = answer.get("code") if isinstance(answer, dict) else None
            why = answer.get("why") if isinstance(answer, dict) else None
            if not isinstance(code, str) or not isinstance(why, str):
                self.invite_label.setText("The node sent an answer the app cannot read.")
                return
            self.invite_code.setText(code)
            self.invite_label.setText(plain_words.INVITE_WORDS.get(why, f"No invite code: {why}."))

        def failed(message: str) -> None:
            self.invite_button.setEnabled(True)
            self.invite_label.setText(f"No invite code: {message}")

        self.bridge.request(Query("invite"), done, failed)
