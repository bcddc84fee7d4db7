"""How a volunteer connects, on the real runtime: the Network page shows the reachability
self-test's result at start in plain words, the invite box says why this loopback-only node has
no code, and Settings refuses a damaged invite code but keeps a good one."""

from __future__ import annotations

from app.crypto.keys import PrivateKey
from app.node.config import apply_file_settings, load_config_file
from app.node.p2p.invite import make_invite
from app.ui import plain_words
from tests.ui.helpers import wait_training


def test_the_network_page_says_who_can_connect_and_settings_take_a_friends_invite(qtbot, gui, config) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    page = gui.window.network
    # the self-test ran at start: this node listens on 127.0.0.1 only
    qtbot.waitUntil(lambda: page.tested is not None, timeout=15_000)
    assert page.tested.verdict == "this_computer"
    assert page.reach_label.text() == plain_words.reachability("this_computer").words
    assert "Settings" in page.reach_label.text()  # what to do about it
    page.show_invite()
    qtbot.waitUntil(lambda: page.invite_label.text() != "", timeout=15_000)
    assert page.invite_code.text() == ""
    assert page.invite_label.text() == plain_words.INVITE_WORDS["this_computer"]

    settings = gui.window.settings
    code = make_invite(PrivateKey.generate().node_id, "192.168.1.20:7450").code
    damaged = code[:30] + ("a" if code[30] != "a" else "b") + code[31:]
    settings.invites.setPlainText(damaged)
    assert not settings.save()
    assert "invite" in settings.message.text()
    settings.invites.setPlainText(f"  {code.upper()}  ")
    assert settings.save(), settings.message.text()
    saved = apply_file_settings(config, load_config_file(config.config_path))
    assert saved.invites == (code,)
