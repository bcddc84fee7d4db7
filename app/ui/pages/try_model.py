"""Try the model: write a prompt, see the model's answer appear word by word, what it costs before
sending and what it cost after, and where the model stands (how long it trained, how well it
predicts text it never trained on, which version it is).

Everything runs on the node (the Generate, QuoteGeneration and model_state commands): on this
computer when it holds the whole model (free), else through the computers that hold it, paid
from this wallet. The text arrives as events, so the window never waits on the model.
"""

from __future__ import annotations

import itertools

from PySide6.QtCore import QTimer
from PySide6.QtGui import QShowEvent, QTextCursor
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.node.events import Generate, Query, QuoteGeneration, StepDone, TextGenerated
from app.ui.bridge import EngineBridge
from app.ui.format import format_neuro

GENERATION_TIMEOUT_S = 900.0
"""A slow computer writes a few words a second: a long answer takes minutes."""
QUOTE_DELAY_MS = 400  # ask for a new price once the volunteer stopped changing the length
STATE_EVERY_STEPS = 20  # re-measure the test score this often while the page is shown

ABOUT = ("The model is trained by the computers of this network, starting from nothing, so early on it "
         "writes mostly nonsense; it improves as it trains.")
SCORE_TERM = ("Held-out loss: the model's average cross-entropy on text it never trained on (lower is "
              "better). Measured only on a computer that holds the whole model.")
_request_ids = itertools.count(1)


def describe_price(quote: dict) -> str:
    """The quote in words: free here, or the price per word and the most it can cost."""
    if quote.get("where") == "this computer":
        return "Free: this computer holds the whole model, so nobody else is involved and nothing is paid."
    per_token, most = int(quote.get("price_per_token_units", 0)), int(quote.get("most_units", 0))
    if per_token == 0:
        return f"Free: the {quote.get('stages', 0)} computers that would answer charge nothing."
    return (f"{format_neuro(per_token, 6)} per word (token), at most {format_neuro(most, 6)} for this "
            f"length, paid from your wallet to the {quote.get('stages', 0)} computers that answer.")


def describe_cost(result: dict) -> str:
    tokens, cost = int(result.get("tokens", 0)), int(result.get("cost_units", 0))
    speed = float(result.get("tokens_per_s", 0.0))
    where = "on this computer" if result.get("where") == "this computer" else \
        f"by {result.get('stages', 0)} computers of the network"
    paid = "Cost: nothing (free)." if cost == 0 else f"Cost: {format_neuro(cost, 6)}."
    return f"{tokens} words (tokens) written {where}, {speed:.1f} per second. {paid}"


def describe_state(state: dict) -> str:
    loss = state.get("held_out_loss")
    score = (f"test score {loss:.3f} (lower is better)" if isinstance(loss, (int, float)) else
             "test score not measured here (this computer holds only part of the model)")
    return (f"Trained for {int(state.get('training_step', 0))} steps here; {score}; model version "
            f"{state.get('architecture_version', '?')} ({state.get('layers', '?')} layers, "
            f"{state.get('hidden', '?')} wide).")


class TryModelPage(QWidget):
    title = "Try the model"

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.request_id = ""
        self._sent_prompt = ""
        self._state_at_step = -STATE_EVERY_STEPS
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Write the beginning of a text; the model continues it.")
        self.prompt.setMaximumHeight(110)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(0.8)
        self.temperature.setToolTip("0 always picks the likeliest next word; higher values write more freely.")
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.05, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setValue(0.95)
        self.top_p.setToolTip("Top-p (nucleus sampling): choose only among the likeliest words that together "
                              "make up this share of the chance.")
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 512)
        self.max_tokens.setValue(64)
        self.max_tokens.setToolTip("How many words (tokens) the model writes at most.")
        self.send_button = QPushButton("Send")
        self.price_label = QLabel("Price: asking…")
        self.price_label.setWordWrap(True)
        self.cost_label = QLabel()
        self.cost_label.setWordWrap(True)
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.output.setPlaceholderText("The model's answer appears here as it writes.")
        self.state_label = QLabel("Asking the node about the model…")
        self.state_label.setWordWrap(True)
        self.state_label.setToolTip(SCORE_TERM)
        self._quote_timer = QTimer(self)
        self._quote_timer.setSingleShot(True)
        self._quote_timer.setInterval(QUOTE_DELAY_MS)
        self._build()
        self._connect()

    def _build(self) -> None:
        settings = QFormLayout()
        settings.addRow("Temperature", self.temperature)
        settings.addRow("Top-p", self.top_p)
        settings.addRow("Most words", self.max_tokens)
        ask = QGroupBox("Your prompt")
        ask_layout = QVBoxLayout(ask)
        ask_layout.addWidget(self.prompt)
        row = QHBoxLayout()
        row.addLayout(settings)
        row.addStretch(1)
        row.addWidget(self.send_button)
        ask_layout.addLayout(row)
        ask_layout.addWidget(self.price_label)
        answer = QGroupBox("The model's answer")
        answer_layout = QVBoxLayout(answer)
        answer_layout.addWidget(self.output, 1)
        answer_layout.addWidget(self.cost_label)
        model = QGroupBox("The model now")
        model_layout = QVBoxLayout(model)
        model_layout.addWidget(self.state_label)
        about = QLabel(ABOUT)
        about.setWordWrap(True)
        about.setProperty("role", "hint")
        model_layout.addWidget(about)
        layout = QVBoxLayout(self)
        layout.addWidget(model)
        layout.addWidget(ask)
        layout.addWidget(answer, 1)

    def _connect(self) -> None:
        self.send_button.clicked.connect(self.send)
        self.max_tokens.valueChanged.connect(lambda _n: self._quote_timer.start())
        self._quote_timer.timeout.connect(self.ask_price)
        self.bridge.generated_text.connect(self.on_text)
        self.bridge.ready.connect(self.refresh)
        self.bridge.step.connect(self.on_step)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt override)
        super().showEvent(event)
        self.refresh()

    # --- asking the node -----------------------------------------------------------------------
    def refresh(self) -> None:
        """The model's state and the price now (both answered by the node, off this thread)."""
        if not self.bridge.is_ready:
            return
        self.ask_state()
        self.ask_price()

    def ask_state(self) -> None:
        self.bridge.request(Query("model_state"), self._on_state,
                            lambda message: self.state_label.setText(f"Could not ask the node about the model ({message})."))

    def ask_price(self) -> None:
        if not self.bridge.is_ready:
            return
        self.bridge.request(QuoteGeneration(max_tokens=self.max_tokens.value()),
                            lambda quote: self.price_label.setText("Price: " + describe_price(quote)),
                            lambda message: self.price_label.setText(f"Price: not available now ({message})."))

    def send(self) -> None:
        text = self.prompt.toPlainText()
        if not text.strip():
            self.cost_label.setText("Write a prompt first.")
            return
        self.request_id = f"try-{next(_request_ids)}"
        self._sent_prompt = text
        self.output.setPlainText(text)
        self.send_button.setEnabled(False)
        self.cost_label.setText("Writing…")
        command = Generate(prompt=text, max_tokens=self.max_tokens.value(), temperature=self.temperature.value(),
                           top_p=self.top_p.value(), request_id=self.request_id)
        handle = self.bridge.request(command, self._on_done, self._on_failed, timeout_s=GENERATION_TIMEOUT_S)
        if handle is None:
            self.send_button.setEnabled(True)

    # --- answers -------------------------------------------------------------------------------
    def on_text(self, event: TextGenerated) -> None:
        if event.request_id != self.request_id:
            return  # an earlier request's late words
        self.output.moveCursor(QTextCursor.MoveOperation.End)
        self.output.insertPlainText(event.text)

    def on_step(self, event: StepDone) -> None:
        if self.isVisible() and event.step - self._state_at_step >= STATE_EVERY_STEPS:
            self._state_at_step = event.step
            self.ask_state()

    def _on_done(self, result: dict) -> None:
        if result.get("request_id") != self.request_id:
            return
        self.send_button.setEnabled(True)
        self.output.setPlainText(self._sent_prompt + str(result.get("text", "")))  # the whole text, as decoded
        self.cost_label.setText(describe_cost(result))
        self.ask_state()

    def _on_failed(self, message: str) -> None:
        self.send_button.setEnabled(True)
        self.cost_label.setText(f"The model could not answer: {message}")

    def _on_state(self, state: dict) -> None:
        self.state_label.setText(describe_state(state))
