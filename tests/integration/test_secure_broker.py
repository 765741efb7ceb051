"""The monitor over a secured connection, through the documented ``kafka.security_protocol`` / ``sasl_*`` /
``ssl_*`` keys, on both clients: over TLS records go in and routed records come out; against a broker that
requires SASL, a wrong password exits 3 within the deadline with a clear message and never shows the secret.

The bundled Tansu 0.6.0 secures nothing itself (see :mod:`connectors.kafka.broker`: its ``--cert`` and
``--key`` cannot be given together, and its SCRAM users are never stored, so every login fails). TLS is
therefore terminated by a proxy in this module, in front of the real broker, which advertises the proxy's
address; certificates are made here by a throwaway CA (``cryptography``). The successful SASL login cannot be
tested on this broker; the refused one is, and there every password is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import threading
import time
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

from connectors.kafka.broker import EmbeddedBroker
from connectors.monitor.loop import Monitor
from tests.integration.conftest import RunningMonitors
from tests.integration.streams import config_for, create_topics, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Tr0ub4dor&3-not-in-any-log"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


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


class TlsProxy:
    """Terminates TLS on ``port`` (bound on entry) and relays the plain bytes to the broker on ``upstream``
    (set once the broker runs: nothing is relayed before a client connects)."""

    def __init__(self, certs: Certificates) -> None:
        self.port = 0
        self.upstream = 0
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certs.cert, certs.key)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tls-proxy", daemon=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._relay(client_r, broker_w), self._relay(broker_r, client_w))

    def __enter__(self) -> TlsProxy:
        self.thread.start()
        # port 0: the kernel's free port, bound at once (a port chosen first may be taken before the bind)
        start = asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(timeout=10)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@contextlib.contextmanager
def tls_broker(certs: Certificates, authentication: bool = False) -> Iterator[str]:
    """The real broker behind a TLS proxy; yields the proxy's address, the one the broker advertises."""
    with (
        TlsProxy(certs) as proxy,
        EmbeddedBroker(advertised_port=proxy.port, authentication=authentication) as broker,
    ):
        assert broker.port is not None
        proxy.upstream = broker.port
        yield f"127.0.0.1:{proxy.port}"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def ssl_kwargs(certs: Certificates) -> dict[str, Any]:
    return {"security_protocol": "SSL", "ssl_cafile": str(certs.ca)}


def read_all(servers: str, topic: str, n: int, certs: Certificates, timeout_s: float = 30) -> list[Any]:
    """The first ``n`` records of ``topic`` (one partition or more), read over TLS."""
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, **ssl_kwargs(certs))
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


class TestTls:
    def test_the_monitor_consumes_and_produces_over_tls(
        self, certs: Certificates, unique: str, monitors: RunningMonitors
    ) -> None:
        """security_protocol SSL with ssl_cafile: 30 predictions in over TLS, every one routed or counted, the
        routed records readable over TLS; the broker's plain port is never given to the monitor."""
        with tls_broker(certs) as servers:
            cfg = config_for(servers, unique, kafka=ssl_kwargs(certs), budget={"rate": 0.3})
            create_topics(cfg)
            producer = KafkaProducer(bootstrap_servers=servers, acks="all", **ssl_kwargs(certs))
            for i in range(30):
                probs = [0.97, 0.01, 0.01, 0.01] if i % 2 else [0.4, 0.3, 0.2, 0.1]
                producer.send(cfg.topics.predictions, value=orjson.dumps({"id": f"s{i}", "probs": probs}))
            producer.flush()
            producer.close()
            monitor = monitors.start(Monitor(cfg, servers))
            stats = monitor.router.stats
            wait_for(lambda: stats.total >= 30, 40, "30 decisions over TLS")
            accepted = read_all(servers, cfg.topics.accepted, stats.items["accept"], certs)
            to_label = read_all(
                servers, cfg.topics.to_label, stats.items["query"] + stats.items["audit"], certs
            )
            assert len(accepted) == stats.items["accept"] > 0
            assert len(to_label) == stats.items["query"] + stats.items["audit"] > 0
            ids = {orjson.loads(m.value)["id"] for m in accepted + to_label}
            assert ids <= {f"s{i}" for i in range(30)} and len(ids) == len(accepted) + len(to_label)
            monitors.stop_all()


class TestAuthentication:
    def test_a_wrong_password_exits_3_within_the_deadline_and_never_shows_it(
        self, certs: Certificates, unique: str, tmp_path: Path
    ) -> None:
        """`selector run` with SASL_SSL / SCRAM-SHA-512 and a password from the environment, against a broker
        that refuses it: exit 3 within the deadline, an error naming the servers and the keys to check (the
        clients report a refused login as no connection), and the password nowhere in the output."""
        with tls_broker(certs, authentication=True) as servers:
            cfg = config_for(servers, unique, kafka={"connect_deadline_s": 3}).model_dump(mode="json")
            cfg["kafka"].update(
                security_protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-512",
                sasl_plain_username="monitor",
                sasl_plain_password="set-from-the-environment",
                ssl_cafile=str(certs.ca),
            )
            path = tmp_path / "config.yaml"
            path.write_text(yaml.safe_dump(cfg))
            began = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "connectors.cli.main", "run", "-c", str(path)],
                check=False,
                cwd=ROOT,
                env={**os.environ, "SELECTOR_KAFKA__SASL_PLAIN_PASSWORD": SECRET},
                capture_output=True,
                text=True,
                timeout=60,
            )
            elapsed = time.monotonic() - began
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
