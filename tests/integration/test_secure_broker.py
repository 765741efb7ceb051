"""The monitor over a secured connection, through the documented ``kafka.security_protocol`` / ``sasl_*`` /
``ssl_*`` keys, on both clients: over TLS, and over TLS with a SCRAM-SHA-512 or SCRAM-SHA-256 login, records
go in and routed records come out; a wrong password exits 3 within the deadline with a clear message and never
shows the secret.

The bundled Tansu 0.6.0 secures nothing itself (see :mod:`connectors.kafka.broker`: its ``--cert`` and
``--key`` cannot be given together, and its SCRAM users are never stored, so every login fails). TLS is
therefore terminated by a proxy in this module, in front of the real broker, which advertises the proxy's
address; certificates are made here by a throwaway CA (``cryptography``). Logins are checked by another proxy,
:mod:`tests.integration.sasl_proxy`: it, not Tansu, holds the user table and runs the SCRAM server (RFC 5802,
checked here against the RFC 7677 example, and its answers request by request on a raw socket), so the
clients perform a real login and the proxy counts the logins it accepted and refused. A wrong password is
tested against both: the proxy's refusal (error 58, with a message) and Tansu's ``--authentication``, where
every password is wrong.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.net.sasl.scram import ScramClient

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.clients import security_kwargs
from connectors.monitor.loop import Monitor
from selector.config import Config
from tests.integration.conftest import RunningMonitors
from tests.integration.sasl_proxy import (
    SASL_AUTHENTICATE,
    SASL_HANDSHAKE,
    Proxy,
    SaslProxy,
    ScramAuthenticationError,
    ScramServer,
    Wire,
    uvarint,
)
from tests.integration.streams import config_for, create_topics, wait_for

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Tr0ub4dor&3-not-in-any-log"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context with the server certificate and its key (for a proxy to terminate TLS)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certificates(where: Path) -> Certificates:
    """A CA and a server certificate it signs for IP 127.0.0.1, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: str, public: Any, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("test CA", "test CA", ca_key.public_key(), ca_key, ca=True)
    cert = build("127.0.0.1", "test CA", key.public_key(), ca_key, ca=False)
    paths = Certificates(where / "ca.pem", where / "server.pem", where / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@contextlib.contextmanager
def tls_broker(certs: Certificates, authentication: bool = False) -> Iterator[str]:
    """The real broker behind a TLS-terminating proxy (bytes relayed unchanged); yields the proxy's address,
    the one the broker advertises."""
    with (
        Proxy(certs.server_context(), "tls-proxy") as proxy,
        EmbeddedBroker(advertised_port=proxy.port, authentication=authentication) as broker,
    ):
        assert broker.port is not None
        proxy.upstream = broker.port
        yield f"127.0.0.1:{proxy.port}"


@contextlib.contextmanager
def sasl_broker(certs: Certificates, users: dict[str, str]) -> Iterator[tuple[str, SaslProxy]]:
    """The real broker behind a TLS-terminating proxy that checks SCRAM logins against ``users``; yields the
    proxy's address (the one the broker advertises) and the proxy, whose counts the test reads."""
    with (
        SaslProxy(users, tls=certs.server_context()) as proxy,
        EmbeddedBroker(advertised_port=proxy.port) as broker,
    ):
        assert broker.port is not None
        proxy.upstream = broker.port
        yield f"127.0.0.1:{proxy.port}", proxy


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def ssl_kwargs(certs: Certificates) -> dict[str, Any]:
    return {"security_protocol": "SSL", "ssl_cafile": str(certs.ca)}


def produce_thirty(servers: str, topic: str, security: dict[str, Any]) -> None:
    """30 predictions, half of them confident, over the secured connection ``security`` describes."""
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", **security)
    for i in range(30):
        probs = [0.97, 0.01, 0.01, 0.01] if i % 2 else [0.4, 0.3, 0.2, 0.1]
        producer.send(topic, value=orjson.dumps({"id": f"s{i}", "probs": probs}))
    producer.flush()
    producer.close()


def read_all(servers: str, topic: str, n: int, security: dict[str, Any], timeout_s: float = 30) -> list[Any]:
    """The first ``n`` records of ``topic`` (one partition or more), read with the ``security`` arguments."""
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, **security)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                out += batch
        return out
    finally:
        consumer.close()


@pytest.mark.broker
@pytest.mark.usefixtures("kafka_client")
class TestTls:
    def test_the_monitor_consumes_and_produces_over_tls(
        self, certs: Certificates, unique: str, monitors: RunningMonitors
    ) -> None:
        """security_protocol SSL with ssl_cafile: 30 predictions in over TLS, every one routed or counted, the
        routed records readable over TLS; the broker's plain port is never given to the monitor."""
        with tls_broker(certs) as servers:
            cfg = config_for(servers, unique, kafka=ssl_kwargs(certs), budget={"rate": 0.3})
            create_topics(cfg)
            produce_thirty(servers, cfg.topics.predictions, ssl_kwargs(certs))
            monitor = monitors.start(Monitor(cfg, servers))
            stats = monitor.router.stats
            wait_for(lambda: stats.total >= 30, 40, "30 decisions over TLS")
            accepted = read_all(servers, cfg.topics.accepted, stats.items["accept"], ssl_kwargs(certs))
            to_label = read_all(
                servers, cfg.topics.to_label, stats.items["query"] + stats.items["audit"], ssl_kwargs(certs)
            )
            assert len(accepted) == stats.items["accept"] > 0
            assert len(to_label) == stats.items["query"] + stats.items["audit"] > 0
            ids = {orjson.loads(m.value)["id"] for m in accepted + to_label}
            assert ids <= {f"s{i}" for i in range(30)} and len(ids) == len(accepted) + len(to_label)
            monitors.stop_all()


def sasl_config(
    servers: str, unique: str, certs: Certificates, mechanism: str, kafka: dict[str, Any], **sections: Any
) -> Config:
    """A config for SASL_SSL with ``mechanism`` as user ``monitor`` (the module's secret its password), with
    more ``kafka`` keys and other sections."""
    settings = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "monitor",
        "sasl_plain_password": SECRET,
        "ssl_cafile": str(certs.ca),
    }
    return config_for(servers, unique, kafka={**settings, **kafka}, **sections)


def run_selector(
    cfg: Config, tmp_path: Path, password: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`selector run` on ``cfg`` with the password from the environment (not the file); its output and how
    long it took."""
    data = cfg.model_dump(mode="json")
    data["kafka"]["sasl_plain_password"] = "set-from-the-environment"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "connectors.cli.main", "run", "-c", str(path)],
        check=False,
        cwd=ROOT,
        env={**os.environ, "SELECTOR_KAFKA__SASL_PLAIN_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, time.monotonic() - began


def assert_refused_login(proc: subprocess.CompletedProcess[str], elapsed: float, servers: str) -> None:
    """Exit 3 within the deadline, the servers and the keys to check named, the password nowhere."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out
    assert elapsed < 30
    assert f"cannot reach Kafka at '{servers}'" in out
    assert "'kafka.bootstrap_servers'" in out and "'kafka.connect_deadline_s'" in out
    assert (
        "with 'kafka.security_protocol' SASL_SSL, a refused login or an untrusted broker certificate "
        "also looks like this: check 'kafka.sasl_mechanism', 'kafka.sasl_plain_username', "
        "'kafka.sasl_plain_password', 'kafka.ssl_cafile'"
    ) in out
    assert SECRET not in out


@pytest.mark.broker
@pytest.mark.usefixtures("kafka_client")
class TestSaslLogin:
    @pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
    def test_the_monitor_logs_in_and_consumes_and_produces(
        self, mechanism: str, certs: Certificates, unique: str, monitors: RunningMonitors
    ) -> None:
        """security_protocol SASL_SSL with a SCRAM mechanism, user and password and ssl_cafile: the monitor's
        client (client id ``selector``) logs in through the proxy, 30 predictions in, every one routed or
        counted, the routed records read back with the same credentials; the proxy accepted only this user
        with this mechanism (at least one login), refused none and saw no request before a login but
        ApiVersions, SaslHandshake and SaslAuthenticate, in versions the broker's ApiVersions answer lists."""
        with sasl_broker(certs, {"monitor": SECRET}) as (servers, proxy):
            cfg = sasl_config(servers, unique, certs, mechanism, {}, budget={"rate": 0.3})
            create_topics(cfg)
            security = {**security_kwargs(cfg), "client_id": "test-io"}
            produce_thirty(servers, cfg.topics.predictions, security)
            monitor = monitors.start(Monitor(cfg, servers))
            stats = monitor.router.stats
            wait_for(lambda: stats.total >= 30, 40, f"30 decisions over SASL_SSL / {mechanism}")
            accepted = read_all(servers, cfg.topics.accepted, stats.items["accept"], security)
            to_label = read_all(
                servers, cfg.topics.to_label, stats.items["query"] + stats.items["audit"], security
            )
            monitors.stop_all()
        assert len(accepted) == stats.items["accept"] > 0
        assert len(to_label) == stats.items["query"] + stats.items["audit"] > 0
        ids = {orjson.loads(m.value)["id"] for m in accepted + to_label}
        assert ids <= {f"s{i}" for i in range(30)} and len(ids) == len(accepted) + len(to_label)
        assert {(user, mech) for user, mech, _ in proxy.accepted} == {("monitor", mechanism)}
        assert {client for _, _, client in proxy.accepted} == {"selector", "test-io"}
        assert proxy.accepted[("monitor", mechanism, "selector")] >= 1
        assert not proxy.refused and not proxy.rejected
        assert {key for key, _ in proxy.seen} == {18, SASL_HANDSHAKE, SASL_AUTHENTICATE}
        for key in (SASL_HANDSHAKE, SASL_AUTHENTICATE):
            low, high = proxy.broker_ranges[key]
            assert all(low <= version <= high for k, version in proxy.seen if k == key)

    def test_a_wrong_password_is_refused_by_the_proxy_exits_3_and_never_shows_it(
        self, certs: Certificates, unique: str, tmp_path: Path
    ) -> None:
        """`selector run` with SASL_SSL / SCRAM-SHA-512 and a password from the environment that the proxy's
        user table does not hold: the proxy refused at least one login of user ``monitor`` (error 58) and
        accepted none; exit 3 within the deadline, the servers and the keys to check named, the password
        nowhere in the output."""
        with sasl_broker(certs, {"monitor": "the-right-password"}) as (servers, proxy):
            cfg = sasl_config(servers, unique, certs, "SCRAM-SHA-512", {"connect_deadline_s": 3})
            proc, elapsed = run_selector(cfg, tmp_path, SECRET)
        assert_refused_login(proc, elapsed, servers)
        assert proxy.refused[("monitor", "SCRAM-SHA-512", "selector")] >= 1
        assert not proxy.accepted and not proxy.rejected


@pytest.mark.broker
@pytest.mark.usefixtures("kafka_client")
class TestAuthentication:
    def test_a_wrong_password_exits_3_within_the_deadline_and_never_shows_it(
        self, certs: Certificates, unique: str, tmp_path: Path
    ) -> None:
        """`selector run` with SASL_SSL / SCRAM-SHA-512 and a password from the environment, against a broker
        that refuses it: exit 3 within the deadline, an error naming the servers and the keys to check (the
        clients report a refused login as no connection), and the password nowhere in the output."""
        with tls_broker(certs, authentication=True) as servers:
            cfg = sasl_config(servers, unique, certs, "SCRAM-SHA-512", {"connect_deadline_s": 3})
            proc, elapsed = run_selector(cfg, tmp_path, SECRET)
        assert_refused_login(proc, elapsed, servers)


RFC_7677 = {
    "client_first": b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    "server_first": b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "client_final": b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "server_final": b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
}
"""The SCRAM-SHA-256 exchange of RFC 7677 section 3 (user "user", password "pencil")."""


def rfc_7677_server(password: str = "pencil") -> ScramServer:
    return ScramServer(
        "SCRAM-SHA-256",
        {"user": password},
        nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        salt=base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="),
        iterations=4096,
    )


class TestScramServer:
    def test_it_answers_the_rfc_7677_exchange_byte_for_byte(self) -> None:
        """With the RFC's server nonce and salt, the server-first and server-final messages are the RFC's,
        and the login is accepted."""
        server = rfc_7677_server()
        assert server.step(RFC_7677["client_first"]) == RFC_7677["server_first"]
        assert server.step(RFC_7677["client_final"]) == RFC_7677["server_final"]
        assert server.done and server.username == "user"

    @pytest.mark.parametrize("password", ["pencil2", ""])
    def test_a_proof_made_with_another_password_is_refused(self, password: str) -> None:
        """The RFC's client proof (made with "pencil") does not hold for a user whose password differs:
        refused with Kafka's message naming the mechanism, and the login is not done."""
        server = rfc_7677_server(password)
        server.step(RFC_7677["client_first"])
        with pytest.raises(
            ScramAuthenticationError, match="invalid credentials with SASL mechanism SCRAM-SHA-256"
        ):
            server.step(RFC_7677["client_final"])
        assert not server.done

    def test_a_nonce_other_than_the_servers_is_refused(self) -> None:
        """A client-final message that does not echo the combined nonce is refused even with a right proof."""
        server = rfc_7677_server()
        server.step(RFC_7677["client_first"])
        with pytest.raises(ScramAuthenticationError):
            server.step(RFC_7677["client_final"].replace(b"k0,p=", b"k1,p="))
        assert not server.done


@contextlib.contextmanager
def proxy_before_a_broker(users: dict[str, str]) -> Iterator[SaslProxy]:
    """The SASL proxy (plain TCP) in front of a listening socket that never answers: enough for everything
    the proxy does before a login, where nothing but ApiVersions reaches the broker."""
    with socket.create_server(("127.0.0.1", 0)) as upstream, SaslProxy(users) as proxy:
        proxy.upstream = int(upstream.getsockname()[1])
        yield proxy


def exchange(conn: socket.socket, payload: bytes) -> bytes:
    """Sends one frame and returns the next frame's bytes (b"" when the proxy closed the connection)."""
    conn.sendall(struct.pack(">i", len(payload)) + payload)

    def read(n: int) -> bytes:
        data = b""
        while len(data) < n and (chunk := conn.recv(n - len(data))):
            data += chunk
        return data

    size = read(4)
    return read(struct.unpack(">i", size)[0]) if len(size) == 4 else b""


def request(key: int, version: int, body: bytes, correlation: int = 7) -> bytes:
    """A request with header v1, or v2 (an empty tagged-field section) for SaslAuthenticate v2."""
    tags = b"\x00" if key == SASL_AUTHENTICATE and version >= 2 else b""
    return struct.pack(">hhih", key, version, correlation, 4) + b"test" + tags + body


def authenticate(conn: socket.socket, version: int, token: bytes) -> tuple[int, str | None, bytes]:
    """One SaslAuthenticate round trip: the error code, error message and server bytes it answered."""
    body = (uvarint(len(token) + 1) if version >= 2 else struct.pack(">i", len(token))) + token
    wire = Wire(exchange(conn, request(SASL_AUTHENTICATE, version, body)))
    assert wire.int32() == 7
    if version >= 2:
        wire.skip_tagged_fields()
        error, n = wire.int16(), wire.uvarint()
        message = wire.take(n - 1).decode() if n else None
        return error, message, wire.compact_bytes()
    error, message = wire.int16(), wire.string()
    return error, message, wire.bytes32()


def handshake(conn: socket.socket, version: int, mechanism: str) -> tuple[int, list[str | None]]:
    """One SaslHandshake round trip: the error code and the mechanisms the proxy offered."""
    name = mechanism.encode()
    wire = Wire(exchange(conn, request(SASL_HANDSHAKE, version, struct.pack(">h", len(name)) + name)))
    assert wire.int32() == 7
    error, count = wire.int16(), wire.int32()
    return error, [wire.string() for _ in range(count)]


class TestSaslProxy:
    def test_a_request_before_a_login_closes_the_connection(self) -> None:
        """A Metadata request before any login gets no answer: the connection is closed and the request is
        counted as rejected."""
        with (
            proxy_before_a_broker({"u": "p"}) as proxy,
            socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as conn,
        ):
            assert exchange(conn, request(3, 1, struct.pack(">i", -1))) == b""
            assert proxy.rejected == [(3, 1)] and not proxy.accepted

    def test_a_mechanism_not_offered_gets_error_33_and_the_offered_ones(self) -> None:
        """SaslHandshake for PLAIN: UNSUPPORTED_SASL_MECHANISM (33) and the two SCRAM mechanisms."""
        with (
            proxy_before_a_broker({"u": "p"}) as proxy,
            socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as conn,
        ):
            assert handshake(conn, 1, "PLAIN") == (33, ["SCRAM-SHA-256", "SCRAM-SHA-512"])
            assert handshake(conn, 1, "SCRAM-SHA-512") == (0, ["SCRAM-SHA-256", "SCRAM-SHA-512"])

    @pytest.mark.parametrize("version", [0, 1, 2])
    def test_a_login_in_each_saslauthenticate_version(self, version: int) -> None:
        """SaslHandshake v1 then SaslAuthenticate v0, v1 or v2 (flexible): a client that knows the password
        gets a server-final whose signature it verifies (kafka-python's SCRAM client), and one login counted
        with the client id of the request header."""
        client = ScramClient("u", "p", "SCRAM-SHA-512")
        with (
            proxy_before_a_broker({"u": "p"}) as proxy,
            socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as conn,
        ):
            assert handshake(conn, 1, "SCRAM-SHA-512")[0] == 0
            error, _, server_first = authenticate(conn, version, client.first_message())
            assert error == 0
            client.process_server_first_message(server_first)
            assert authenticate(conn, version, client.final_message())[:2] == (0, None)
            assert proxy.accepted == Counter({("u", "SCRAM-SHA-512", "test"): 1})

    def test_a_wrong_password_gets_error_58_with_a_message_and_a_closed_connection(self) -> None:
        """SaslAuthenticate v2 with a proof made from another password: SASL_AUTHENTICATION_FAILED (58), a
        message naming the mechanism, no server signature, the login counted as refused, then EOF."""
        client = ScramClient("u", "not-p", "SCRAM-SHA-256")
        with (
            proxy_before_a_broker({"u": "p"}) as proxy,
            socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as conn,
        ):
            handshake(conn, 1, "SCRAM-SHA-256")
            client.process_server_first_message(authenticate(conn, 2, client.first_message())[2])
            error, message, server_final = authenticate(conn, 2, client.final_message())
            assert (error, server_final) == (58, b"")
            assert message is not None and "invalid credentials with SASL mechanism SCRAM-SHA-256" in message
            assert proxy.refused == Counter({("u", "SCRAM-SHA-256", "test"): 1}) and not proxy.accepted
            assert conn.recv(1) == b""

    def test_after_a_v0_handshake_the_tokens_travel_bare(self) -> None:
        """SaslHandshake v0: the SCRAM messages go as bare frames without a Kafka header, and the login
        succeeds."""
        client = ScramClient("u", "p", "SCRAM-SHA-256")
        with (
            proxy_before_a_broker({"u": "p"}) as proxy,
            socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as conn,
        ):
            assert handshake(conn, 0, "SCRAM-SHA-256")[0] == 0
            client.process_server_first_message(exchange(conn, client.first_message()))
            client.process_server_final_message(exchange(conn, client.final_message()))
            assert proxy.accepted == Counter({("u", "SCRAM-SHA-256", "test"): 1})
