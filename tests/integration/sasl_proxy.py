"""A proxy that checks SASL logins in front of a broker that cannot: the broker tests' SCRAM server.

The bundled Tansu 0.6.0 offers only SCRAM and keeps no SCRAM credentials (every login gets ``unknown-user``),
so a successful login is tested through this proxy instead: it terminates TLS with the test's certificates
(optional), answers ``SaslHandshake`` and ``SaslAuthenticate`` itself with a real SCRAM server (RFC 5802, with
the SHA-256 and SHA-512 hashes of RFC 7677) over a user table it is given, forwards ``ApiVersions`` to the
plain broker behind it, refuses every other request before a login succeeds, and relays the bytes both ways
unchanged after it. The broker advertises the proxy's port, so the clients come back through it.

Wire layouts (Kafka protocol, ``clients/src/main/resources/common/message/*.json``): a frame is an int32
big-endian length and that many bytes. Request header v1: int16 api_key, int16 api_version, int32
correlation_id, nullable string client_id (int16 length, -1 for null); header v2 (flexible versions) adds
tagged fields. Response header v0: int32 correlation_id; v1 adds tagged fields (``ApiVersions`` always answers
with v0).

- ``SaslHandshake`` (17) v0-v1, never flexible: request string mechanism; response int16 error_code,
  array (int32 count) of string mechanisms. After v0, the SASL tokens travel as bare frames (no header).
- ``SaslAuthenticate`` (36) v0-v2, flexible from v2: request bytes auth_bytes (int32 length; compact: unsigned
  varint length + 1); response int16 error_code, nullable string error_message, bytes auth_bytes, int64
  session_lifetime_ms from v1 (0: no re-authentication), tagged fields from v2.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets
import ssl
import struct
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Self

SASL_HANDSHAKE, API_VERSIONS, SASL_AUTHENTICATE = 17, 18, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
HASHES: dict[str, Callable[..., Any]] = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}
MAX_LOGIN_FRAME = 1 << 20
"""Largest frame read before a login: every request allowed then is small (a TLS hello on the plain port,
read as a length, is refused here instead of awaited)."""


class ScramAuthenticationError(Exception):
    """A SCRAM exchange the server refuses; the message is safe to send to the client."""


class ScramServer:
    """The server side of one SCRAM exchange (RFC 5802 section 3, hashes of RFC 7677).

    With ``H`` the mechanism's hash, ``Hi`` PBKDF2-HMAC-``H`` and ``AuthMessage`` the client-first-bare,
    server-first and client-final-without-proof messages joined by commas::

        SaltedPassword  = Hi(password, salt, iterations)
        ClientKey       = HMAC(SaltedPassword, "Client Key");  StoredKey = H(ClientKey)
        ClientSignature = HMAC(StoredKey, AuthMessage);         ClientProof = ClientKey XOR ClientSignature
        ServerSignature = HMAC(HMAC(SaltedPassword, "Server Key"), AuthMessage)

    The server recovers ``ClientKey = ClientProof XOR ClientSignature`` and accepts when ``H(ClientKey)`` is
    ``StoredKey``; it then proves it knew the password too with ``v=base64(ServerSignature)``.

    Args:
        mechanism: ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``.
        users: password of each user name.
        nonce: the server's part of the nonce (random if None); salt: the salt (random if None).
        iterations: PBKDF2 iterations (4096, Kafka's minimum for SCRAM).

    Example (RFC 7677 section 3)::

        >>> server = ScramServer("SCRAM-SHA-256", {"user": "pencil"},
        ...                      nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        ...                      salt=base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
        >>> server.first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        b'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096'
    """

    def __init__(
        self,
        mechanism: str,
        users: Mapping[str, str],
        *,
        nonce: str | None = None,
        salt: bytes | None = None,
        iterations: int = 4096,
    ) -> None:
        self.hash = HASHES[mechanism]
        self.mechanism = mechanism
        self.users = users
        self.server_nonce = nonce if nonce is not None else secrets.token_urlsafe(18)
        self.salt = salt if salt is not None else secrets.token_bytes(16)
        self.iterations = iterations
        self.username: str | None = None
        self.done = False
        self._gs2_header = self._nonce = self._client_first_bare = self._server_first = ""

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self.hash).digest()

    def first(self, client_first: bytes) -> bytes:
        """The server-first message ``r=<client nonce><server nonce>,s=<salt>,i=<iterations>``."""
        text = client_first.decode("utf-8", "replace")
        gs2_flag, _authzid, bare = [*text.split(",", 2), "", ""][:3]
        fields = dict(part.split("=", 1) for part in bare.split(",") if "=" in part)
        if gs2_flag not in {"n", "y"} or "n" not in fields or "r" not in fields:
            raise ScramAuthenticationError(f"malformed SCRAM client-first message for {self.mechanism}")
        self.username = fields["n"].replace("=2C", ",").replace("=3D", "=")
        self._gs2_header = text[: len(text) - len(bare)]
        self._nonce = fields["r"] + self.server_nonce
        self._client_first_bare = bare
        salt = base64.b64encode(self.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self.iterations}"
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        """The server-final message ``v=<server signature>`` when the client's proof holds; raises
        :class:`ScramAuthenticationError` otherwise (a wrong password and an unknown user alike)."""
        text = client_final.decode("utf-8", "replace")
        without_proof, _, proof_field = text.rpartition(",p=")
        fields = dict(part.split("=", 1) for part in without_proof.split(",") if "=" in part)
        refused = ScramAuthenticationError(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism "
            f"{self.mechanism}"
        )
        if (
            not proof_field
            or fields.get("r") != self._nonce
            or fields.get("c") != base64.b64encode(self._gs2_header.encode()).decode()
        ):
            raise refused
        password = self.users.get(self.username or "")
        if password is None:
            raise refused
        salted = hashlib.pbkdf2_hmac(self.hash().name, password.encode(), self.salt, self.iterations)
        client_key = self._hmac(salted, b"Client Key")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = self._hmac(self.hash(client_key).digest(), auth_message)
        try:
            proof = base64.b64decode(proof_field, validate=True)
        except ValueError:
            raise refused from None
        recovered = bytes(a ^ b for a, b in zip(proof, signature, strict=False))
        if len(proof) != len(signature) or not hmac.compare_digest(
            self.hash(recovered).digest(), self.hash(client_key).digest()
        ):
            raise refused
        self.done = True
        server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return b"v=" + base64.b64encode(server_signature)

    def step(self, token: bytes) -> bytes:
        """The answer to the client's next message: server-first, then server-final."""
        return self.first(token) if not self._server_first else self.final(token)


class Wire:
    """Reads Kafka's primitive types from one frame, front to back."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise ValueError(f"frame too short: {n} bytes wanted at {self.at} of {len(self.data)}")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def string(self) -> str | None:
        n = self.int16()
        return None if n < 0 else self.take(n).decode("utf-8", "replace")

    def bytes32(self) -> bytes:
        return self.take(self.int32())

    def compact_bytes(self) -> bytes:
        return self.take(self.uvarint() - 1)

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    data = value.encode()
    return struct.pack(">h", len(data)) + data


def authenticate_response(version: int, error: int, message: str | None, auth_bytes: bytes) -> bytes:
    """A SaslAuthenticate response body (after the response header) in ``version``'s layout."""
    if version >= 2:
        text = None if message is None else message.encode()
        body = struct.pack(">h", error) + (uvarint(0) if text is None else uvarint(len(text) + 1) + text)
        return body + uvarint(len(auth_bytes) + 1) + auth_bytes + struct.pack(">q", 0) + uvarint(0)
    body = struct.pack(">h", error) + string(message) + struct.pack(">i", len(auth_bytes)) + auth_bytes
    return body + (struct.pack(">q", 0) if version >= 1 else b"")


def api_ranges(version: int, body: bytes) -> dict[int, tuple[int, int]]:
    """The (min, max) version of each API key in an ApiVersions response body of ``version``."""
    wire = Wire(body)
    if wire.int16() != 0:
        return {}
    count = wire.uvarint() - 1 if version >= 3 else wire.int32()
    ranges = {}
    for _ in range(count):
        key, low, high = wire.int16(), wire.int16(), wire.int16()
        if version >= 3:
            wire.skip_tagged_fields()
        ranges[key] = (low, high)
    return ranges


async def read_frame(reader: asyncio.StreamReader, limit: int = MAX_LOGIN_FRAME) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    if not 0 <= size <= limit:
        raise ValueError(f"frame of {size} bytes before a login (at most {limit})")
    return await reader.readexactly(size)


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes from ``reader`` to ``writer`` until either side closes (one direction of a proxy)."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def frame(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


class Proxy:
    """A proxy on ``port`` (bound on entry, TLS terminated with ``tls`` if given) in front of the broker on
    ``upstream`` (set once the broker runs: nothing is relayed before a client connects), served by an event
    loop on its own thread. Each connection gets one to the broker and is handed to :meth:`_session`, which
    relays the bytes both ways unchanged."""

    def __init__(self, tls: ssl.SSLContext | None, name: str) -> None:
        self.tls = tls
        self.port = 0
        self.upstream = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            client_w.close()
            return
        await self._session(client_r, client_w, broker_r, broker_w)

    async def _session(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        broker_r: asyncio.StreamReader,
        broker_w: asyncio.StreamWriter,
    ) -> None:
        await asyncio.gather(relay(client_r, broker_w), relay(broker_r, client_w))

    def __enter__(self) -> Self:
        self.thread.start()
        # port 0: the kernel's free port, bound at once (a port chosen first may be taken before the bind)
        start = asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(timeout=10)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class SaslProxy(Proxy):
    """Checks SCRAM logins on ``port`` (bound on entry) and relays logged-in connections to the broker on
    ``upstream`` (set once the broker runs).

    Counts, read by the tests: ``accepted`` and ``refused`` logins (by user, mechanism and the client id of
    the request header), ``rejected`` requests sent before a login (api key, version), every request ``seen``
    before a login (api key, version) and the SASL API ranges the broker's ``ApiVersions`` answer listed
    (``broker_ranges``).

    Args:
        users: password of each user name.
        mechanisms: the mechanisms it offers.
        tls: a server context to terminate TLS with (plain TCP if None).
    """

    def __init__(
        self,
        users: Mapping[str, str],
        mechanisms: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-512"),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(tls, "sasl-proxy")
        self.users = dict(users)
        self.mechanisms = mechanisms
        self.accepted: Counter[tuple[str, str, str]] = Counter()
        self.refused: Counter[tuple[str, str, str]] = Counter()
        self.rejected: list[tuple[int, int]] = []
        self.seen: list[tuple[int, int]] = []
        self.broker_ranges: dict[int, tuple[int, int]] = {}

    async def _session(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        broker_r: asyncio.StreamReader,
        broker_w: asyncio.StreamWriter,
    ) -> None:
        """A login first; the bytes relayed unchanged after one, the connection closed without."""
        logged_in = False
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError, UnicodeDecodeError):
            logged_in = await self._login(client_r, client_w, broker_r, broker_w)
        if logged_in:
            await super()._session(client_r, client_w, broker_r, broker_w)
        else:
            client_w.close()
            broker_w.close()

    async def _login(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        broker_r: asyncio.StreamReader,
        broker_w: asyncio.StreamWriter,
    ) -> bool:
        """Serves one connection's requests until a login succeeds (True) or fails or a request other than
        ApiVersions, SaslHandshake or SaslAuthenticate comes first (False: the caller closes)."""
        scram: ScramServer | None = None
        bare_tokens = False
        client_id = ""
        while True:
            request = await read_frame(client_r)
            if bare_tokens and scram is not None:
                # after SaslHandshake v0 the tokens have no header, and a refusal is a closed connection
                try:
                    reply = scram.step(request)
                except ScramAuthenticationError:
                    self.refused[(scram.username or "", scram.mechanism, client_id)] += 1
                    return False
                if scram.done:  # counted before the answer, so a client that has it sees the count
                    self.accepted[(scram.username or "", scram.mechanism, client_id)] += 1
                client_w.write(frame(reply))
                await client_w.drain()
                if scram.done:
                    return True
                continue
            wire = Wire(request)
            key, version, correlation = wire.int16(), wire.int16(), wire.int32()
            client_id = wire.string() or ""
            self.seen.append((key, version))
            flexible = (key == API_VERSIONS and version >= 3) or (key == SASL_AUTHENTICATE and version >= 2)
            if flexible:
                wire.skip_tagged_fields()
            header = struct.pack(">i", correlation)
            if key == API_VERSIONS:
                broker_w.write(frame(request))
                await broker_w.drain()
                response = await read_frame(broker_r)
                with contextlib.suppress(ValueError):
                    ranges = api_ranges(version, response[4:])
                    sasl = {k: v for k, v in ranges.items() if k in (SASL_HANDSHAKE, SASL_AUTHENTICATE)}
                    self.broker_ranges.update(sasl)
                client_w.write(frame(response))
            elif key == SASL_HANDSHAKE:
                mechanism = wire.string() or ""
                error = 0 if mechanism in self.mechanisms else UNSUPPORTED_SASL_MECHANISM
                scram = ScramServer(mechanism, self.users) if error == 0 else None
                bare_tokens = version == 0 and scram is not None
                offered = b"".join(string(m) for m in self.mechanisms)
                client_w.write(frame(header + struct.pack(">hi", error, len(self.mechanisms)) + offered))
            elif key == SASL_AUTHENTICATE and scram is not None:
                token = wire.compact_bytes() if version >= 2 else wire.bytes32()
                header += uvarint(0) if version >= 2 else b""
                try:
                    reply = scram.step(token)
                except ScramAuthenticationError as exc:
                    self.refused[(scram.username or "", scram.mechanism, client_id)] += 1
                    body = authenticate_response(version, SASL_AUTHENTICATION_FAILED, str(exc), b"")
                    client_w.write(frame(header + body))
                    await client_w.drain()
                    return False
                if scram.done:
                    self.accepted[(scram.username or "", scram.mechanism, client_id)] += 1
                client_w.write(frame(header + authenticate_response(version, 0, None, reply)))
                await client_w.drain()
                if scram.done:
                    return True
            else:
                self.rejected.append((key, version))
                return False
            await client_w.drain()
