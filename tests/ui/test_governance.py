"""Governance page on the node's real ledger (funded at genesis, proposals seeded there): readable
merges, tallies, signed votes, refusals, proposals. The tests share one node (module fixture); an
account votes once per proposal, so each voting test votes on its own proposal."""

from __future__ import annotations

from app.ui.merges_text import describe_merge, example_words
from app.ui.widgets.proposal_dialog import parse_merges
from tests.ui.funded_ledger import CLOSED_PROPOSAL, OPEN_PROPOSAL, PASSWORD, PROPOSALS, SECOND_PROPOSAL
from tests.ui.helpers import economy, wait_training


def open_governance(qtbot, shared_gui):  # noqa: ANN001, ANN201
    wait_training(qtbot, shared_gui)
    page = shared_gui.window.governance
    qtbot.waitUntil(lambda: len(page.proposals) >= len(PROPOSALS), timeout=10_000)
    return page


def select(page, title: str) -> None:  # noqa: ANN001
    index = [p.title for p in page.proposals].index(title)
    page.table.selectRow(index)


def test_proposals_show_phase_countdown_and_readable_merges(qtbot, shared_gui) -> None:  # noqa: ANN001
    page = open_governance(qtbot, shared_gui)
    qtbot.wait(400)  # the devnet's discussion phase lasts 0.3 s
    page.refresh()
    qtbot.waitUntil(lambda: "voting" in [p.phase for p in page.proposals], timeout=5_000)
    select(page, OPEN_PROPOSAL)
    row = page.table.currentRow()
    assert page.table.item(row, 1).text() == "voting"
    assert page.table.item(row, 2).text().endswith((" min", " s")) or " min " in page.table.item(row, 2).text()
    items = [page.merges_list.item(i).text() for i in range(page.merges_list.count())]
    assert items[0].startswith('"t" + "h" → "th"')
    assert items[2].startswith('"▁" + "the" → "▁the"')
    assert page.yes_button.isEnabled()
    select(page, CLOSED_PROPOSAL)
    assert not page.yes_button.isEnabled()


def test_vote_with_password_reaches_the_ledger(qtbot, shared_gui) -> None:  # noqa: ANN001
    page = open_governance(qtbot, shared_gui)
    qtbot.wait(400)  # the devnet's discussion phase lasts 0.3 s
    page.refresh()
    qtbot.waitUntil(lambda: any(p.phase == "voting" for p in page.proposals), timeout=5_000)
    select(page, OPEN_PROPOSAL)
    proposal_id = page.selected().proposal_id
    page.vote(True)
    page.active_dialog.password.setText(PASSWORD)
    assert page.active_dialog.try_accept()
    qtbot.waitUntil(lambda: "recorded" in page.message.text(), timeout=5_000)
    ledger_proposal = {p.proposal_id: p for p in economy(shared_gui).ledger.proposals()}[proposal_id]  # the node's own
    assert ledger_proposal.votes == {page.session.bridge.latest("balance").address: True}
    qtbot.waitUntil(lambda: page.selected() is not None and page.selected().yes_weight > 0, timeout=5_000)
    assert page.approval_bar.value() == 100


def test_vote_outside_the_window_shows_the_ledgers_reason(qtbot, shared_gui) -> None:  # noqa: ANN001
    page = open_governance(qtbot, shared_gui)
    select(page, CLOSED_PROPOSAL)
    assert not page.yes_button.isEnabled()  # the window knows; the ledger is asked anyway below
    page.submit_vote(page.selected().proposal_id, True, PASSWORD)
    qtbot.waitUntil(lambda: "Vote not recorded" in page.message.text(), timeout=5_000)
    assert shared_gui.window.isVisible()


def test_new_proposal_shows_stake_and_lands_in_the_list(qtbot, shared_gui) -> None:  # noqa: ANN001
    page = open_governance(qtbot, shared_gui)
    before = len(page.proposals)
    page.message.clear()  # the shared page may still show an earlier test's answer
    dialog = page.open_propose()
    assert any("100 NEURO" in label.text() for label in dialog.findChildren(type(dialog.error)))
    dialog.title_edit.setText("More merges")
    dialog.merges_edit.setPlainText("a n\nan d")
    dialog.password.setText(PASSWORD)
    assert dialog.try_accept()
    qtbot.waitUntil(lambda: "submitted" in page.message.text() or "not" in page.message.text(), timeout=5_000)
    assert "submitted" in page.message.text(), page.message.text()
    qtbot.waitUntil(lambda: len(page.proposals) == before + 1, timeout=5_000)
    select(page, "More merges")
    assert page.merges_list.item(1).text().startswith('"an" + "d" → "and"')


def test_merge_text_helpers_parse_and_describe() -> None:
    assert parse_merges("th e\n▁ the\n") == [("th", "e"), (" ", "the")]
    assert describe_merge(116, 104) == '"t" + "h" → "th"'
    assert describe_merge("7468", "65") == '"th" + "e" → "the"'
    assert "the" in example_words("th", "e")
    for bad in ("", "a b c"):
        try:
            parse_merges(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} should be refused")


def test_vote_in_an_unlocked_session_needs_no_password(qtbot, shared_gui) -> None:  # noqa: ANN001
    page = open_governance(qtbot, shared_gui)
    errors: list[str] = []
    page.session.unlock(PASSWORD, errors.append)
    qtbot.waitUntil(lambda: page.session.unlocked, timeout=10_000)
    qtbot.wait(400)  # the devnet's discussion phase lasts 0.3 s
    page.refresh()
    qtbot.waitUntil(lambda: "voting" in [p.phase for p in page.proposals], timeout=5_000)
    select(page, SECOND_PROPOSAL)
    page.active_dialog = None
    page.vote(False)
    assert page.active_dialog is None  # signed by the unlocked session, no prompt
    qtbot.waitUntil(lambda: "no vote was recorded" in page.message.text(), timeout=5_000)
    proposal = {p.title: p for p in economy(shared_gui).ledger.proposals()}[SECOND_PROPOSAL]
    assert list(proposal.votes.values()) == [False] and not errors


def test_the_page_shows_the_vocabulary_the_model_trains_with(qtbot, shared_gui) -> None:  # noqa: ANN001
    from app.node.events import VocabularyChanged

    page = open_governance(qtbot, shared_gui)
    qtbot.waitUntil(lambda: shared_gui.bridge.latest("vocabulary") is not None, timeout=10_000)  # the real node's
    assert shared_gui.bridge.latest("vocabulary").vocab_size == 266 and "266 tokens" in page.vocabulary_label.text()
    # what the node announces when a vote's merges take effect (the runtime side: test_vocab_vote_reaches_model)
    shared_gui.bridge.inject(VocabularyChanged(vocab_size=269, merges=3, version="269-abc", applied=("p1",)))
    assert "269 tokens" in page.vocabulary_label.text() and "3 merge(s) voted in by 1 proposal," in \
        page.vocabulary_label.text()
