"""Secured connections: Kafka with SASL (SCRAM-SHA-256 over loopback, both
SASL_PLAINTEXT and SASL_SSL) and Redis with an ACL user over TLS, the
passwords read from files in the secrets directory, through the same
settings in every client.

The broker is a private one started by the project's ``deploy/local/kafka.sh``
with ``KAFKA_SASL_MECHANISM`` and ``KAFKA_TLS_KEYSTORE_PEM`` (its own ports
and data); the Redis server is a private ``redis-server`` with a TLS port
only and the default user disabled. One CA made by this test with openssl
signs both servers' certificate. Both servers are stopped by PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError
from test_stream_support import (
    PYTHON,
    ROOT,
    free_port,
    make_events,
    running,
    stopped_summaries,
    user_counts,
    wait_exit,
    wait_for,
    worker_cmd,
)

from streamer.service.connections import kafka_security, redis_client
from streamer.service.settings import StreamSettings

SASL_USER, SASL_PASSWORD = "hpmf", "s3cret-kafka"
REDIS_USER, REDIS_PASSWORD = "hpmf-app", "s3cret-redis"


# ---------------------------------------------------------------- settings


def test_secrets_come_from_files_and_are_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hpmf_kafka_sasl_password").write_text("from-file\n")
    (tmp_path / "hpmf_redis_password").write_text("redis-file")
    monkeypatch.setenv("HPMF_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("HPMF_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HPMF_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("HPMF_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("HPMF_KAFKA_SSL_CAFILE", "/etc/ca.pem")
    s = StreamSettings()
    assert (
        s.kafka_sasl_password.get_secret_value() == "from-file"
    )  # trailing newline of the file dropped
    assert kafka_security(s) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "from-file",
        "ssl_check_hostname": True,
        "ssl_cafile": "/etc/ca.pem",
    }
    described = json.dumps(s.describe(), default=str)
    assert "from-file" not in described and "redis-file" not in described
    assert s.describe()["kafka_sasl_password"] == "***"
    # The environment wins over a file.
    monkeypatch.setenv("HPMF_REDIS_PASSWORD", "from-env")
    assert StreamSettings().redis_password.get_secret_value() == "from-env"


def test_inconsistent_security_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPMF_SECRETS_DIR", raising=False)
    with pytest.raises(ValidationError, match="needs kafka_sasl_mechanism"):
        StreamSettings(kafka_security_protocol="SASL_PLAINTEXT")
    with pytest.raises(ValidationError, match="kafka_sasl_username and kafka_sasl_password"):
        StreamSettings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="u",
        )
    with pytest.raises(ValidationError, match="kafka_security_protocol is PLAINTEXT"):
        StreamSettings(kafka_sasl_mechanism="PLAIN")
    with pytest.raises(ValidationError, match="rediss://"):
        StreamSettings(redis_ssl_ca_certs="/etc/ca.pem")
    with pytest.raises(ValidationError):
        StreamSettings(kafka_security_protocol="TLS")  # not a protocol name
    monkeypatch.setenv("HPMF_SECRETS_DIR", "/nonexistent/secrets")
    with pytest.raises(ValueError, match="not a directory"):
        StreamSettings()


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "sticky", "cooperative-sticky"])
def test_group_settings_reach_the_consumer(assignor: str) -> None:
    from streamer.service.connections import group_membership

    s = StreamSettings(partition_assignor=assignor, group_instance_id="hpmf-worker-0")
    kwargs = group_membership(s)
    assert kwargs["group_instance_id"] == "hpmf-worker-0"
    (cls,) = kwargs["partition_assignment_strategy"]
    assert cls.name == assignor
    assert "group_instance_id" not in group_membership(StreamSettings())


def test_stream_cli_refuses_sasl_without_a_password() -> None:
    env = {
        **os.environ,
        "HPMF_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "HPMF_KAFKA_SASL_MECHANISM": "PLAIN",
    }
    env.pop("HPMF_SECRETS_DIR", None)
    out = subprocess.run(
        [PYTHON, "-m", "streamer.cli", "stream"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        out.returncode == 2
        and "invalid settings" in out.stderr
        and "kafka_sasl_password" in out.stderr
    )
    env = {**os.environ, "HPMF_SECRETS_DIR": "/nonexistent/secrets"}
    out = subprocess.run(
        [PYTHON, "-m", "streamer.cli", "stream"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        out.returncode == 2 and "HPMF_SECRETS_DIR" in out.stderr and "Traceback" not in out.stderr
    )


# ---------------------------------------------------------------- real servers


def make_certificates(d: Path) -> None:
    """A CA and a server certificate for 127.0.0.1 signed by it."""

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=hpmf-test-ca",
    )
    ssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )


def start_tls_redis(port: int, d: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(d / "server.crt"),
            "--tls-key-file",
            str(d / "server.key"),
            "--tls-ca-cert-file",
            str(d / "ca.crt"),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(d),
            "--user",
            "default",
            "off",
            "--user",
            REDIS_USER,
            "on",
            f">{REDIS_PASSWORD}",
            "~*",
            "&*",
            "+@all",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kafka_sh(action: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "deploy/local/kafka.sh"), action],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"kafka.sh {action} failed:\n{done.stdout}\n{done.stderr}"


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("openssl") is None,
    reason="needs redis-server (with TLS) and openssl on PATH",
)
def test_stream_over_sasl_and_sasl_ssl_kafka_and_tls_redis_with_an_acl_user(
    tmp_path: Path, topic_name: str, redis_cluster_url: str
) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import KafkaError

    certs = tmp_path / "certs"
    certs.mkdir()
    make_certificates(certs)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "hpmf_kafka_sasl_password").write_text(SASL_PASSWORD)
    (secrets / "hpmf_redis_password").write_text(REDIS_PASSWORD)
    (certs / "keystore.pem").write_text(
        (certs / "server.key").read_text() + (certs / "server.crt").read_text()
    )
    kport, cport, sport, tport, rport = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    )
    broker_env = {
        "KAFKA_PORT": str(kport),
        "KAFKA_CONTROLLER_PORT": str(cport),
        "KAFKA_SASL_PORT": str(sport),
        "KAFKA_SASL_SSL_PORT": str(tport),
        "KAFKA_TLS_KEYSTORE_PEM": str(certs / "keystore.pem"),
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USER": SASL_USER,
        "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "HPMF_RUN": str(tmp_path / "run"),
        "KAFKA_DATA": str(tmp_path / "kafka-data"),
    }
    bootstrap = f"127.0.0.1:{sport}"
    # What every client of the project reads: the environment plus the secrets directory.
    client_env = {
        "HPMF_KAFKA_BOOTSTRAP": bootstrap,
        "HPMF_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "HPMF_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "HPMF_KAFKA_SASL_USERNAME": SASL_USER,
        "HPMF_REDIS_URL": f"rediss://127.0.0.1:{rport}/0",
        "HPMF_REDIS_USERNAME": REDIS_USER,
        "HPMF_REDIS_SSL_CA_CERTS": str(certs / "ca.crt"),
        "HPMF_SECRETS_DIR": str(secrets),
        "HPMF_TOPIC": topic_name,
        "HPMF_TOPIC_RETENTION_MS": "7200000",
        "HPMF_TOPIC_REPLICATION_FACTOR": "1",
    }
    redis_srv = start_tls_redis(rport, certs)
    kafka_sh("start", broker_env)
    old_env = dict(os.environ)
    os.environ.update(client_env)
    try:
        s = StreamSettings()
        r = redis_client(s)
        wait_for(lambda: _pings(r), 15, "TLS Redis up")
        # Without the credentials neither server lets a client in.
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(
                host="127.0.0.1", port=rport, ssl=True, ssl_ca_certs=str(certs / "ca.crt")
            ).set("x", 1)
        with pytest.raises(KafkaError):
            KafkaAdminClient(
                bootstrap_servers=bootstrap,
                request_timeout_ms=3000,
                api_version_auto_timeout_ms=3000,
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="SCRAM-SHA-256",
                sasl_plain_username=SASL_USER,
                sasl_plain_password="wrong",
            ).list_topics()

        # Topic creation through `hpmf topics`, with the retention from the settings.
        topics = subprocess.run(
            [PYTHON, "-m", "streamer.cli", "topics"],
            cwd=ROOT,
            env={**os.environ},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert topics.returncode == 0, topics.stderr
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **kafka_security(s))
        try:
            got = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name)])
            retention = got["topic"][topic_name]["retention.ms"]
            assert (
                retention.get("value") if isinstance(retention, dict) else retention
            ) == "7200000", got
        finally:
            admin.close()

        # The stream: produced by the project's producer over SASL_PLAINTEXT,
        # consumed by `hpmf stream` over SASL_SSL (TLS, the test's CA, host name checked).
        events, counts = make_events(2000, 120, seed=21)
        from streamer.cli.replay import produce

        produce(bootstrap, topic_name, events, progress=False)  # security from the environment
        users = sorted(counts)
        log = tmp_path / "worker.log"
        tls = {
            "HPMF_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "HPMF_KAFKA_SSL_CAFILE": str(certs / "ca.crt"),
        }
        cmd = worker_cmd(
            f"127.0.0.1:{tport}",
            client_env["HPMF_REDIS_URL"],
            topic_name,
            "sec",
            "--stop-when-idle-s",
            "3",
        )
        with running(cmd, log, env=tls) as proc:
            wait_for(
                lambda: _alive(proc, log) and user_counts(r, "sec", users) == dict(counts),
                120,
                "every event in TLS Redis",
            )
            proc.send_signal(signal.SIGTERM)
            assert wait_exit(proc, 60, log) == 0
        assert user_counts(r, "sec", users) == dict(counts)
        summary = stopped_summaries(log)[-1]
        assert summary["applied"] == 2000 and summary["invalid"] == 0
        text = log.read_text()
        assert (
            SASL_PASSWORD not in text and REDIS_PASSWORD not in text
        )  # masked in the settings log line
        assert (
            '"kafka_sasl_password": "***"' in text
            and '"kafka_security_protocol": "SASL_SSL"' in text
        )

        # Issue 14's clients over the same secured connections: the learner
        # wrote its checkpoint to the checkpoints topic at shutdown, and
        # `hpmf rebuild --status` reads the marker (TLS Redis), the topic's
        # retention (admin) and that checkpoint (consumer) over SASL_SSL.
        status = subprocess.run(
            [PYTHON, "-m", "streamer.cli", "rebuild", "--status", "--redis-prefix", "sec"],
            cwd=ROOT,
            env={**os.environ, **tls, "HPMF_KAFKA_BOOTSTRAP": f"127.0.0.1:{tport}"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0, status.stderr
        assert "retention.ms 7200000" in status.stdout, status.stdout
        assert f"checkpoint {topic_name}.checkpoints: version" in status.stdout, status.stdout
        assert (
            SASL_PASSWORD not in status.stdout + status.stderr
            and REDIS_PASSWORD not in status.stdout + status.stderr
        )

        # The same stream over SASL_SSL into the three-master Redis Cluster of
        # deploy/local/redis_cluster.sh (issue 15 item 2; no ACL or TLS on
        # that one), a second consumer group from the start: counts exact.
        from redis.cluster import RedisCluster

        cl_prefix = f"sec-{topic_name[-10:]}"
        plain_redis = {
            "HPMF_REDIS_USERNAME": "",
            "HPMF_REDIS_PASSWORD": "",
            "HPMF_REDIS_SSL_CA_CERTS": "",
        }
        cmd = worker_cmd(
            f"127.0.0.1:{tport}",
            redis_cluster_url,
            topic_name,
            cl_prefix,
            "--stop-when-idle-s",
            "3",
            "--redis-cluster",
            "true",
            "--group-id",
            f"g2-{topic_name}",
        )
        cluster = RedisCluster.from_url(redis_cluster_url)
        try:
            with running(cmd, tmp_path / "cluster-worker.log", env={**tls, **plain_redis}) as proc:
                assert wait_exit(proc, 120, tmp_path / "cluster-worker.log") == 0
            assert user_counts(cluster, cl_prefix, users) == dict(counts)
            assert stopped_summaries(tmp_path / "cluster-worker.log")[-1]["applied"] == 2000
            assert int(cluster.get(f"{{{cl_prefix}}}:g:current")) >= 1
        finally:
            for pattern in (f"{cl_prefix}:*", f"{{{cl_prefix}}}:*"):
                keys = list(cluster.scan_iter(match=pattern, count=1000))
                if keys:
                    cluster.delete(*keys)
            cluster.close()
    finally:
        os.environ.clear()
        os.environ.update(old_env)
        kafka_sh("stop", broker_env)
        redis_srv.send_signal(signal.SIGKILL)
        redis_srv.wait(timeout=10)


def _alive(proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
    return True


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False
