"""Invite codes: a friend's node, pasted as one line of text.

A code carries where to dial (an IPv4 address and port) and who must answer there (the node id,
the hash of its public key). The joiner dials ``<node id>@host:port``, so the TLS channel must
prove that node's identity binding (client.py) exactly as for a peer found on the LAN; a code
that names the wrong address simply fails, one that names the wrong node cannot be answered by
anyone else. A code is untrusted input: :func:`parse_invite` accepts only the exact format.

Format: ``ns1-`` + lowercase base32 (no padding) of version (1 byte, 1) | node id (32) | IPv4
address (4) | port (2, big-endian) | the first 4 bytes of SHA-256 over what precedes (typos are
caught before anything is dialled).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from dataclasses import dataclass

PREFIX = "ns1-"
VERSION = 1
_BODY = 1 + 32 + 4 + 2
_LENGTH = _BODY + 4
_CODE = re.compile(r"ns1-[a-z2-7]{69}")
"""43 bytes are 69 base32 characters without padding."""
MAX_INPUT = 200
"""Pasted text longer than this is refused before it is looked at (a code is 73 characters)."""


class InvalidInvite(ValueError):
    """The text is not an invite code; the message says what is wrong in plain words."""


@dataclass(frozen=True)
class Invite:
    node_id: bytes
    host: str
    port: int

    @property
    def dial(self) -> str:
        """The pinned address: whoever answers must prove it is ``node_id``."""
        return f"{self.node_id.hex()}@{self.host}:{self.port}"

    @property
    def code(self) -> str:
        body = bytes([VERSION]) + self.node_id + ipaddress.IPv4Address(self.host).packed + self.port.to_bytes(2, "big")
        raw = body + hashlib.sha256(body).digest()[:4]
        return PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def make_invite(node_id: bytes, address: str) -> Invite:
    """The invite for ``node_id`` listening at ``address`` (``host:port``, a dialable IPv4 host)."""
    host, _, port = address.rpartition(":")
    invite = Invite(node_id, host, int(port) if port.isdigit() else 0)
    _check(invite)
    return invite


def parse_invite(text: str) -> Invite:
    """The invite in ``text`` (surrounding spaces ignored); InvalidInvite for anything else."""
    if not isinstance(text, str) or len(text) > MAX_INPUT:
        raise InvalidInvite("that is not an invite code (too long)")
    code = text.strip().lower()
    if not _CODE.fullmatch(code):
        raise InvalidInvite("that is not an invite code: it starts with ns1- and has 73 letters and digits")
    try:
        raw = base64.b32decode(code[len(PREFIX):].upper() + "===", casefold=False)
    except (binascii.Error, ValueError):
        raise InvalidInvite("that invite code is damaged (it does not decode)") from None
    if len(raw) != _LENGTH or raw[0] != VERSION:
        raise InvalidInvite("that invite code is from another version of NeuroShard")
    body, check = raw[:_BODY], raw[_BODY:]
    if hashlib.sha256(body).digest()[:4] != check:
        raise InvalidInvite("that invite code has a typo (its check digits do not match)")
    invite = Invite(body[1:33], str(ipaddress.IPv4Address(body[33:37])), int.from_bytes(body[37:39], "big"))
    if invite.code != code:  # one spare bit at the end: only the canonical spelling is a code
        raise InvalidInvite("that invite code is damaged (its last letter is wrong)")
    _check(invite)
    return invite


def _check(invite: Invite) -> None:
    if len(invite.node_id) != 32:
        raise InvalidInvite("an invite names a node by its 32-byte id")
    if not 0 < invite.port < 65536:
        raise InvalidInvite("that invite code names no port")
    try:
        ip = ipaddress.IPv4Address(invite.host)
    except ValueError:
        raise InvalidInvite(f"an invite needs an IPv4 address, not {invite.host[:40]!r}") from None
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved or ip.is_link_local:
        raise InvalidInvite(f"{ip} is not an address another computer can dial")
