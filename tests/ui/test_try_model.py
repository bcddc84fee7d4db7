"""The "Try the model" page on the real runtime (a lone node holding the whole tiny model): a
prompt sent from the page streams the model's words into the answer box as events, the cost is
shown after (free: nobody else took part), and the model's state names its training step, its
loss on held-out text and its version. Greedy words equal in-process generation with the node's
own weights (training paused, so the weights hold still)."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.node.events import NodeState, Pause, Resume, TextGenerated
from app.node.model.generation import generate
from tests.ui.helpers import runtime, wait_training
from tests.ui.test_plain_words_and_charts import JARGON, visible_texts

PROMPT = "The cat sat on"


def test_a_prompt_on_the_page_streams_words_and_shows_the_cost(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    window = gui.window
    page = window.try_model
    window.show_page(window.pages.index(page))
    qtbot.waitUntil(lambda: "Trained for" in page.state_label.text(), timeout=30_000)
    assert "test score" in page.state_label.text() and "lower is better" in page.state_label.text()
    assert "model version 1" in page.state_label.text()
    qtbot.waitUntil(lambda: page.price_label.text().startswith("Price: Free"), timeout=30_000)

    gui.bridge.request(Pause())  # the weights hold still, so the greedy words can be checked
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.PAUSED, timeout=60_000)
    pieces: list[TextGenerated] = []
    gui.bridge.generated_text.connect(pieces.append)
    page.prompt.setPlainText(PROMPT)
    page.temperature.setValue(0.0)
    page.max_tokens.setValue(12)
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
    assert not page.send_button.isEnabled()  # one request at a time; the window did not wait for it
    qtbot.waitUntil(lambda: "Cost:" in page.cost_label.text(), timeout=120_000)

    assert "Cost: nothing (free)" in page.cost_label.text(), page.cost_label.text()
    assert "written on this computer" in page.cost_label.text()
    assert pieces and all(p.request_id == page.request_id for p in pieces)
    assert [p.index for p in pieces] == sorted(p.index for p in pieces)
    streamed = "".join(p.text for p in pieces)
    assert page.output.toPlainText().startswith(PROMPT + streamed[:1])
    node = runtime(gui)
    tokenizer = node._base.vocab.tokenizer
    expected = generate([node.stage.shard], tokenizer.encode(PROMPT), 12, temperature=0, eos_id=tokenizer.eos_id)
    assert page.output.toPlainText() == PROMPT + tokenizer.decode(expected)
    assert streamed == tokenizer.decode(expected)[:len(streamed)]
    assert page.send_button.isEnabled()
    for text in visible_texts(page):
        if text not in (page.prompt.toPlainText(), page.output.toPlainText()):
            assert not JARGON.search(text), text
    gui.bridge.request(Resume())
