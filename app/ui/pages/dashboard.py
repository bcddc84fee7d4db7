"""Dashboard: is my machine helping, what is it doing, what did it earn today; pause/resume."""

from __future__ import annotations

import datetime as dt

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.node.events import (
    ActivityChanged,
    EarningsChanged,
    HardwareMeasured,
    LayersAssigned,
    NetworkChanged,
    NodeState,
    Pause,
    ProofAccepted,
    ProofRefused,
    Query,
    QuorumChanged,
    Resume,
    StatusChanged,
    StepDone,
)
from app.node.values import TrainingSchedule
from app.ui import plain_words
from app.ui.bridge import EngineBridge
from app.ui.format import format_bytes, format_neuro
from app.ui.records import BadAnswer, read_earnings
from app.ui.snooze import CHOICES, snooze_until, until_words
from app.ui.widgets.live_chart import LiveChart
from app.ui.widgets.state_badge import StateBadge
from app.ui.widgets.work_view import WorkView
from app.ui.work_history import WorkHistory

EARNINGS_REFRESH_MS = 30_000  # the ledger validates proofs per 60 s epoch; twice per epoch is enough
PAUSABLE = (NodeState.JOINING, NodeState.TRAINING)


def today_key() -> str:
    return dt.date.today().isoformat()


class DashboardPage(QWidget):
    title = "Dashboard"

    def __init__(self, bridge: EngineBridge, schedule: TrainingSchedule, history: WorkHistory,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.work = WorkView(schedule)
        self.badge = StateBadge()
        self.pause_button = QPushButton("Pause")
        self.pause_button.setProperty("role", "primary")
        self.pause_button.setMinimumHeight(56)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.snooze_button = QToolButton()
        self.snooze_button.setText("Snooze")
        self.snooze_button.setMinimumHeight(56)
        self.snooze_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.snooze_menu = QMenu(self.snooze_button)
        self.snooze_actions = {choice: self.snooze_menu.addAction(label) for choice, label in CHOICES}
        for choice, action in self.snooze_actions.items():
            action.triggered.connect(lambda _checked=False, c=choice: self.snooze(c))
        self.snooze_button.setMenu(self.snooze_menu)
        self.snoozed_label = QLabel()
        self.snoozed_label.hide()
        self.activity_label = QLabel("Waiting for the node to start")
        self.alone_label = QLabel(plain_words.TRAINING_ALONE)
        self.alone_label.setWordWrap(True)
        self.alone_label.setToolTip(plain_words.TRAINING_ALONE_TERM)
        self.alone_label.hide()
        self.hold_label = QLabel()
        self.hold_label.setStyleSheet("color: #b05a00;")
        self.hold_label.hide()
        self.device_label, self.tier_label = QLabel("—"), QLabel("—")
        self.tier_label.setWordWrap(True)
        self.layers_label, self.role_label, self.quorum_label = QLabel("—"), QLabel("—"), QLabel("—")
        self.limits_label = QLabel("as set in Settings")
        self.limits_label.setWordWrap(True)
        self.earned_label = QLabel(format_neuro(0))
        self.earned_label.setProperty("role", "big")
        self.lifetime_label = QLabel("nothing settled yet")
        self.lifetime_label.setWordWrap(True)
        self.loss_chart = LiveChart("Model error (lower is better)", "loss")
        self.loss_chart.setToolTip("The training loss: how far the model's guesses of the next piece of text are "
                                   "from the real text (cross-entropy).")
        self.speed_chart = LiveChart("Speed", "tokens per second")
        self.speed_chart.setToolTip("Pieces of text (tokens) this computer trains on per second.")
        for step, loss, speed in history.points:  # the charts continue where the last run ended
            self.loss_chart.add_point(step, loss)
            self.speed_chart.add_point(step, speed)
        self._paused = False
        self._refused: dict[str, str] = {}  # proof kind -> the ledger's reason, until accepted again
        self._earned_base_units = 0
        self._earned_live_units = 0
        self._build()
        self._connect()
        self._timer = QTimer(self)
        self._timer.setInterval(EARNINGS_REFRESH_MS)
        self._timer.timeout.connect(self.refresh_earnings)
        self._timer.start()

    def _build(self) -> None:
        top = QHBoxLayout()
        top.addWidget(self.badge, 1)
        top.addWidget(self.pause_button)
        top.addWidget(self.snooze_button)
        facts = QGroupBox("This computer")
        grid = QGridLayout(facts)
        rows = [("Device", self.device_label), ("Speed", self.tier_label), ("Model parts held", self.layers_label),
                ("What it does", self.role_label), ("Training group", self.quorum_label),
                ("Limits now", self.limits_label), ("Earned today", self.earned_label),
                ("Earnings", self.lifetime_label)]
        for row, (name, widget) in enumerate(rows):
            title = QLabel(name)
            grid.addWidget(title, row, 0)
            grid.addWidget(widget, row, 1)
            if name == "Training group":
                title.setToolTip(plain_words.GROUP_TERM)
        charts = QHBoxLayout()
        charts.addWidget(self.loss_chart)
        charts.addWidget(self.speed_chart)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.activity_label)
        layout.addWidget(self.alone_label)
        layout.addWidget(self.hold_label)
        layout.addWidget(self.snoozed_label)
        layout.addWidget(self.work)
        layout.addWidget(facts)
        layout.addLayout(charts, 1)

    def _connect(self) -> None:
        b = self.bridge
        b.status.connect(self.on_status)
        b.hardware.connect(self.on_hardware)
        b.layers.connect(self.on_layers)
        b.quorum.connect(self.on_quorum)
        b.step.connect(self.on_step)
        b.activity.connect(self.on_activity)
        b.proof.connect(self.on_proof)
        b.earnings.connect(self.on_earnings)
        b.proof_refused.connect(self.on_proof_refused)
        b.ready.connect(self.refresh_earnings)
        b.network.connect(self.on_network)
        for kind, slot in (("status", self.on_status), ("hardware", self.on_hardware), ("layers", self.on_layers),
                           ("quorum", self.on_quorum), ("activity", self.on_activity), ("network", self.on_network)):
            latest = b.latest(kind)
            if latest is not None:
                slot(latest)

    # --- events -------------------------------------------------------------------------------

    def on_status(self, event: StatusChanged) -> None:
        self.badge.set_state(event.state, event.detail)
        if event.state == NodeState.PAUSED:
            self._paused = True
        elif event.state in (NodeState.TRAINING, NodeState.STOPPED, NodeState.ERROR):
            self._paused = False
            self.snoozed_label.hide()  # the snooze ended (or Resume was pressed)
        self._update_button(event.state)

    def on_network(self, event: NetworkChanged) -> None:
        """Say so while no other node is connected: the node then trains its own copy, not a network."""
        self.alone_label.setVisible(event.peers == 0)

    def _update_button(self, state: NodeState) -> None:
        self.pause_button.setText("Resume" if self._paused else "Pause")
        self.pause_button.setEnabled(self._paused or state in PAUSABLE)
        self.snooze_button.setEnabled(self._paused or state in PAUSABLE)

    def on_hardware(self, event: HardwareMeasured) -> None:
        self.device_label.setText(f"{event.device_name} ({event.device}, {format_bytes(event.memory_bytes)})")
        plain = plain_words.tier(event.tier)
        self.tier_label.setText(plain.words[0].upper() + plain.words[1:])
        self.tier_label.setToolTip(f"{plain.tooltip}\nMeasured: {event.ms_per_layer:.0f} ms per reference layer.")

    def on_layers(self, event: LayersAssigned) -> None:
        count = event.last_layer - event.first_layer
        self.layers_label.setText(
            f"{count} of {event.total_layers} layers (layers {event.first_layer}–{event.last_layer - 1}), "
            f"model version {event.architecture_version}, {event.parameters / 1e6:.1f} million weights"
        )
        self.layers_label.setToolTip(f"{event.parameters:,} parameters; hidden size {event.hidden}.")
        role = plain_words.roles(event.roles)
        self.role_label.setText(role.words)
        self.role_label.setToolTip(role.tooltip)

    def on_quorum(self, event: QuorumChanged) -> None:
        members = len(event.members)
        self.quorum_label.setText(f"{event.state}, {members} computer{'s' if members != 1 else ''}")
        speed = f", speed class {event.speed_class}" if event.speed_class else ""
        self.quorum_label.setToolTip(f"{plain_words.GROUP_TERM}\nQuorum {event.quorum_id}{speed}.")

    def on_step(self, event: StepDone) -> None:
        self.loss_chart.add_point(event.step, event.loss)
        self.speed_chart.add_point(event.step, event.tokens_per_s)
        self.work.on_step(event)

    def set_hold_reason(self, reason: str) -> None:
        """The volunteer's own rules hold the node (idle-only, schedule, battery, programs)."""
        self.hold_label.setText(f"Paused by your settings: {reason}" if reason else "")
        self.hold_label.setVisible(bool(reason))

    def set_caps_in_force(self, text: str) -> None:
        """Which set of limits applies now (the guard switches them as the volunteer comes and goes)."""
        self.limits_label.setText(text or "as set in Settings")

    def on_activity(self, event: ActivityChanged) -> None:
        self.activity_label.setText(f"Now: {plain_words.activity(event.activity)}")
        self.activity_label.setToolTip(event.activity)

    def on_earnings(self, event: EarningsChanged) -> None:
        """Settled (lifetime), still in a challenge window (pending) and refused, from the ledger."""
        text = f"{format_neuro(event.lifetime_units)} settled in total · {format_neuro(event.pending_units)} pending"
        if event.refused:
            text += f" · {event.refused} proof(s) refused, last: {event.last_refusal}"
        self.lifetime_label.setText(text)

    def on_proof_refused(self, event: ProofRefused) -> None:
        """Refused work turns the badge amber with the ledger's reason until a proof of that kind
        is accepted again (an accepted uptime proof does not excuse refused training proofs)."""
        self._refused[event.proof_kind] = event.reason
        self._show_refusals()

    def _show_refusals(self) -> None:
        kind, reason = next(iter(self._refused.items()), ("", ""))
        self.badge.set_warning(f"{kind} work refused: {reason}" if kind else "")

    def on_proof(self, event: ProofAccepted) -> None:
        if self._refused.pop(event.proof_kind, None) is not None:
            self._show_refusals()
        if dt.date.fromtimestamp(event.timestamp).isoformat() == today_key():
            self._earned_live_units += event.reward_units
            self._show_earned()

    # --- actions ------------------------------------------------------------------------------

    def toggle_pause(self) -> None:
        want_pause = not self._paused
        self.pause_button.setEnabled(False)

        def done(_result: object) -> None:
            self._paused = want_pause
            self._update_button(self.bridge.state)

        def failed(message: str) -> None:
            self._update_button(self.bridge.state)
            self.bridge.command_failed.emit(f"Could not {'pause' if want_pause else 'resume'}: {message}")

        self.bridge.request(Pause() if want_pause else Resume(), done, failed)

    def snooze(self, choice: str) -> None:
        """Pause until the chosen time; the engine resumes the node on its own then."""
        until = snooze_until(choice)

        def done(_result: object) -> None:
            self._paused = True
            self.snoozed_label.setText(f"Snoozed until {until_words(until)}. Resume starts it now.")
            self.snoozed_label.show()
            self._update_button(self.bridge.state)

        def failed(message: str) -> None:
            self.bridge.command_failed.emit(f"Could not snooze: {message}")

        self.bridge.request(Pause(until=until), done, failed)

    def refresh_earnings(self) -> None:
        if self.bridge.engine is None:
            return

        def done(answer: object) -> None:
            try:
                rows = read_earnings(answer)
            except BadAnswer:
                return  # the wallet page reports unreadable answers; the dashboard keeps live sums
            self._earned_base_units = sum(r.units for r in rows if r.day == today_key())
            self._earned_live_units = 0
            self._show_earned()

        self.bridge.request(Query("earnings"), done, lambda _message: None)

    def _show_earned(self) -> None:
        self.earned_label.setText(format_neuro(self._earned_base_units + self._earned_live_units))
