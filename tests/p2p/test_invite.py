"""Invite codes (p2p/invite.py): the strict parser for pasted text, and joining through one."""

from __future__ import annotations

import pytest

from app.crypto.keys import PrivateKey
from app.node.p2p.invite import InvalidInvite, make_invite, parse_invite
from app.node.runtime.network import NetworkService
from tests.p2p.helpers import run

P2P = {"use_upnp": False, "lan_discovery": False, "heartbeat_interval_s": 0.5}


def test_an_invite_round_trips_and_names_the_pinned_dial() -> None:
    node_id = bytes(range(32))
    invite = make_invite(node_id, "192.168.1.20:7450")
    code = invite.code
    assert code.startswith("ns1-") and len(code) == 73
    assert parse_invite(f"  {code.upper()}\n") == invite  # pasted with spaces or in capitals
    assert invite.dial == f"{node_id.hex()}@192.168.1.20:7450"


@pytest.mark.parametrize("address", ["0.0.0.0:7450", "224.0.0.1:7450", "192.168.1.20:0", "example.org:7450",
                                     "[::1]:7450", "192.168.1.20"])
def test_no_invite_for_an_address_nobody_can_dial(address: str) -> None:
    with pytest.raises(InvalidInvite):
        make_invite(bytes(32), address)


def test_the_parser_refuses_everything_but_an_exact_code() -> None:
    code = make_invite(bytes(range(32)), "10.0.0.5:7450").code
    typo = code[:30] + ("a" if code[30] != "a" else "b") + code[31:]
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    spare_bit = code[:-1] + alphabet[alphabet.index(code[-1]) ^ 1]  # only the unused last bit differs
    for text, why in ((typo, "typo"), (spare_bit, "damaged"), (code[:-1], "not an invite"), (code + "a", "not an invite"),
                      ("ns1-" + "1" * 69, "not an invite"), ("x" * 10_000, "too long"), ("", "not an invite"),
                      (code.replace("ns1-", "ns2-"), "not an invite")):
        with pytest.raises(InvalidInvite, match=why):
            parse_invite(text)
    # a well-formed code of another version is named as such
    import base64
    import hashlib

    from app.node.p2p import invite as module

    body = bytes([2]) + bytes(32) + bytes([10, 0, 0, 5]) + (7450).to_bytes(2, "big")
    other = "ns1-" + base64.b32encode(body + hashlib.sha256(body).digest()[:4]).decode().rstrip("=").lower()
    assert module._CODE.fullmatch(other)
    with pytest.raises(InvalidInvite, match="another version"):
        parse_invite(other)


def test_a_node_given_an_invite_joins_the_friend_and_is_not_alone() -> None:
    async def scenario() -> None:
        friend = NetworkService.open(PrivateKey.generate(), host="127.0.0.1", port=0, trackers=(), listen=True,
                                     p2p=P2P, emit=lambda _e: None)
        await friend.start("T3", 2)
        try:
            code = make_invite(friend.node.node_id, friend.node.address).code
            joiner = NetworkService.open(PrivateKey.generate(), host="127.0.0.1", port=0, trackers=(), listen=True,
                                         p2p=P2P, emit=lambda _e: None, invites=(code,))
            # a code naming another node at the friend's address: the pinned dial refuses it
            impostor = make_invite(PrivateKey.generate().node_id, friend.node.address).code
            fooled = NetworkService.open(PrivateKey.generate(), host="127.0.0.1", port=0, trackers=(), listen=True,
                                         p2p=P2P, emit=lambda _e: None, invites=(impostor,))
            await joiner.start("T3", 2)
            await fooled.start("T3", 2)
            try:
                assert friend.node.node_id in joiner.invited and not joiner.solo
                assert friend.node.node_id in {r.node_id for r in await joiner.peers()}
                assert not fooled.invited and fooled.solo
            finally:
                await joiner.stop()
                await fooled.stop()
        finally:
            await friend.stop()

    run(scenario(), timeout=120)
