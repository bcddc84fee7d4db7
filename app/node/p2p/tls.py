"""TLS for every gRPC connection, bound to the secp256k1 node identity.

Each server (node or tracker) has a self-signed ECDSA P-256 certificate, made with the
``cryptography`` library at first start and kept in its data dir. The certificate carries a
non-critical extension, the *binding*::

    b"NSTLS" | version (1) | node public key (33) | signature (64)

where the signature is the node key's over ``BINDING_DOMAIN | SHA-256(SubjectPublicKeyInfo)``.
A certificate therefore proves on its own which node id it belongs to: nobody can bind their
TLS key to a node id whose secp256k1 key they do not hold. The same SHA-256 (the certificate's
*fingerprint*) is also in the node's signed peer record (records.py, field ``tls``), so anyone
holding the record knows which certificate to expect.

gRPC for Python has no hook to verify a peer certificate in code, and it only trusts a
self-signed certificate that is given as a root. So a client, before it opens a channel to an
address, runs one TLS handshake of its own (:func:`probe`, ``asyncio`` + ``ssl``) to read the
server's certificate, checks the binding and that it names the node it meant to reach, and then
opens the gRPC channel with exactly that certificate as its only root (``ssl_channel_credentials``
with ``grpc.ssl_target_name_override``). gRPC's own handshake then refuses any other certificate,
so what was checked is what the channel talks to, for its whole life (reconnects included).

Clients do not present certificates: gRPC for Python cannot verify a self-signed client
certificate either. Requests are signed (auth.py), which is how a server knows its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import hashlib
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.crypto.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, PrivateKey, verify

BINDING_OID = x509.ObjectIdentifier("2.25.167842384562290513462815926631938761431")
"""A UUID-derived OID (ITU-T X.667 arc 2.25): private, needs no registration."""
BINDING_DOMAIN = b"neuroshard-tls-binding-v1:"
_MAGIC = b"NSTLS\x01"
SERVER_NAME = "neuroshard"
"""Every certificate names this host; the channel overrides the target name to it. The name
carries no trust: the pinned certificate does."""
_VALID_DAYS = 20 * 365  # pinned, not CA-validated: expiry would only break long-lived nodes
MAX_CERT_BYTES = 16 * 1024


class TlsIdentityError(ValueError):
    """A certificate without a valid binding, or bound to another node than the one expected."""


def fingerprint(cert_der: bytes) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo: what the node key signs."""
    cert = x509.load_der_x509_certificate(cert_der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def _binding(key: PrivateKey, spki_hash: bytes) -> bytes:
    return _MAGIC + key.public_key.data + key.sign(BINDING_DOMAIN + spki_hash)


def bound_public_key(cert_der: bytes) -> bytes:
    """The node public key a certificate is bound to; raises TlsIdentityError if the binding is
    missing, malformed or not signed by that key over this certificate's public key."""
    if len(cert_der) > MAX_CERT_BYTES:
        raise TlsIdentityError("certificate too large")
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        ext = cert.extensions.get_extension_for_oid(BINDING_OID).value
    except x509.ExtensionNotFound:
        raise TlsIdentityError("certificate carries no node-identity binding") from None
    except ValueError as exc:
        raise TlsIdentityError(f"certificate does not parse: {exc}") from None
    raw = getattr(ext, "value", b"")
    if len(raw) != len(_MAGIC) + PUBLIC_KEY_SIZE + SIGNATURE_SIZE or not raw.startswith(_MAGIC):
        raise TlsIdentityError("node-identity binding is malformed")
    pub = raw[len(_MAGIC):len(_MAGIC) + PUBLIC_KEY_SIZE]
    sig = raw[len(_MAGIC) + PUBLIC_KEY_SIZE:]
    if not verify(pub, BINDING_DOMAIN + fingerprint(cert_der), sig):
        raise TlsIdentityError("node-identity binding is not signed by the key it names")
    return pub


def bound_node_id(cert_der: bytes) -> bytes:
    return hashlib.sha256(bound_public_key(cert_der)).digest()


@dataclass(frozen=True)
class TlsIdentity:
    """A server's certificate and TLS key (PEM), bound to ``key``."""

    cert_pem: bytes
    key_pem: bytes

    @functools.cached_property
    def cert_der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER)

    @functools.cached_property
    def fingerprint(self) -> bytes:
        return fingerprint(self.cert_der)

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS only (no plain-text fallback); clients prove themselves by signing requests."""
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)])

    @classmethod
    def create(cls, key: PrivateKey) -> TlsIdentity:
        tls_key = ec.generate_private_key(ec.SECP256R1())
        spki = tls_key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(tls_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.UnrecognizedExtension(BINDING_OID, _binding(key, hashlib.sha256(spki).digest())),
                           critical=False)
            .sign(tls_key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM),
                   tls_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))

    @classmethod
    def load_or_create(cls, key: PrivateKey, directory: Path | None) -> TlsIdentity:
        """The identity kept in ``directory`` (``tls.crt``, ``tls.key``) if it is bound to
        ``key``; otherwise a new one, written there (key file 0600, atomically). With no
        directory (tests, benchmarks) the identity lives in memory only."""
        if directory is None:
            return cls.create(key)
        cert_path, key_path = directory / "tls.crt", directory / "tls.key"
        with contextlib.suppress(OSError, ValueError, TlsIdentityError):
            found = cls(cert_path.read_bytes(), key_path.read_bytes())
            if bound_public_key(found.cert_der) == key.public_key.data:
                return found
        made = cls.create(key)
        directory.mkdir(parents=True, exist_ok=True)
        write_private(key_path, made.key_pem)
        write_private(cert_path, made.cert_pem)
        return made


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file atomically, readable by its owner only."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def der_to_pem(cert_der: bytes) -> bytes:
    return x509.load_der_x509_certificate(cert_der).public_bytes(serialization.Encoding.PEM)


def pinned_channel(address: str, cert_der: bytes,
                   options: list[tuple[str, object]] | None = None) -> grpc.aio.Channel:
    """A grpc.aio channel that trusts exactly ``cert_der`` (as its only root) at ``address``."""
    return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=der_to_pem(cert_der)),
                                   options=[("grpc.ssl_target_name_override", SERVER_NAME), *(options or [])])


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def probe(address: str, timeout: float) -> bytes:
    """The DER certificate that the server at ``address`` presents in a TLS handshake.

    Verification is deliberately off here: the caller checks the binding (and the node id)
    itself, then pins this very certificate for the gRPC channel."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    host, port = _split(address)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=SERVER_NAME)
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    finally:
        # no TLS close_notify exchange: the server (expecting HTTP/2) may never answer one
        writer.transport.abort()
    if not der:
        raise TlsIdentityError(f"{address} presented no certificate")
    return der
