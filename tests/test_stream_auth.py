"""Auth and configuration errors fail fast; no secret in any log line or
metric (issue 14, item 4).

Against a private redis-server started by this test on a free port with a
password (``requirepass``) and an ACL user that may not run scripts, the
worker exits 3 within seconds with one line naming the setting (before: a
wrong password was retried forever), whatever form the URL gives the password
in, and the password appears nowhere in its output or its metrics (before: a
``?password=`` URL was logged in clear)."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request

import pytest
import redis
from test_stream_support import (
    ROOT,
    create_topic,
    free_port,
    make_events,
    produce,
    running,
    user_counts,
    wait_for,
    worker_cmd,
)

from streamer.service.errors import ConfigurationError, fatal_setting, retry
from streamer.service.settings import StreamSettings, mask_url

PASSWORD = "s3cr3t-Pw_9f1c"
LIMITED_PASSWORD = "lim1ted-Pw_77ab"
WRONG = "wr0ng-Pw_4d2e"
SECRETS = (PASSWORD, LIMITED_PASSWORD, WRONG)


# ------------------------------------------------------------ unit: masking
@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@127.0.0.1:6379/0",
        f"redis://default:{PASSWORD}@127.0.0.1:6379/0",
        f"redis://{PASSWORD}@127.0.0.1:6379/0",
        f"rediss://app:{PASSWORD}@cache.internal:6380/1?ssl_cert_reqs=required",
        f"redis://127.0.0.1:6379/0?password={PASSWORD}",
        f"redis://127.0.0.1:6379/0?username=app&password={PASSWORD}&db=2",
        f"redis://127.0.0.1:6379/0?PASSWORD={PASSWORD}",
        f"unix:///run/redis.sock?db=0&password={PASSWORD}",
        f"redis://u:{PASSWORD}@h:6379/0?password={PASSWORD}#{PASSWORD}",
        f"redis://u:p@ss{PASSWORD}@h:6379/0",
        f"redis://:{PASSWORD}@[::1]:6379/0",
        f"redis://:{PASSWORD}@h:notaport/0",
        f"redis://127.0.0.1:6379/0?token={PASSWORD}",
    ],
)
def test_no_form_of_url_shows_its_secret(url: str) -> None:
    masked = mask_url(url)
    assert PASSWORD not in masked
    if "notaport" not in url:
        assert masked.split("://")[0] == url.split("://")[0]


def test_settings_as_logged_hide_the_secret() -> None:
    s = StreamSettings(redis_url=f"redis://127.0.0.1:6379/0?password={PASSWORD}")
    assert PASSWORD not in repr(s.describe()) and "password=***" in s.describe()["redis_url"]


def test_invalid_redis_url_is_refused_without_repeating_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from streamer.cli.stream import main

    assert main(["--redis-url", f"http://:{PASSWORD}@h/0"]) == 2
    err = capsys.readouterr().err
    assert "redis_url" in err and PASSWORD not in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------ unit: retry policy
def _raiser(exc: BaseException, calls: list[int]) -> object:
    def fn() -> None:
        calls.append(1)
        raise exc

    return fn


@pytest.mark.parametrize(
    ("exc", "setting"),
    [
        (
            redis.exceptions.AuthenticationError("WRONGPASS invalid username-password pair"),
            "redis_url",
        ),
        (redis.exceptions.AuthenticationError("NOAUTH Authentication required."), "redis_url"),
        (
            redis.exceptions.NoPermissionError(
                "NOPERM this user has no permissions to run the 'evalsha' command"
            ),
            "redis_url",
        ),
    ],
)
def test_refusals_are_not_retried(exc: BaseException, setting: str) -> None:
    import logging

    calls: list[int] = []
    with pytest.raises(ConfigurationError) as got:
        retry(_raiser(exc, calls), "x", logging.getLogger("t"), lambda: False)  # type: ignore[arg-type]
    assert (
        calls == [1]
        and got.value.setting == setting
        and f"HPMF_{setting.upper()}" in str(got.value)
    )


def test_kafka_authorization_errors_name_their_setting() -> None:
    from kafka import errors as ke

    assert fatal_setting(ke.TopicAuthorizationFailedError()).setting == "topic"  # type: ignore[union-attr]
    assert fatal_setting(ke.GroupAuthorizationFailedError()).setting == "group_id"  # type: ignore[union-attr]
    assert fatal_setting(ke.ClusterAuthorizationFailedError()).setting == "kafka_bootstrap"  # type: ignore[union-attr]
    assert fatal_setting(ke.SaslAuthenticationFailedError()).setting == "kafka_bootstrap"  # type: ignore[union-attr]
    assert (
        fatal_setting(ke.KafkaConnectionError()) is None
        and fatal_setting(ke.KafkaTimeoutError()) is None
    )


def test_transient_errors_are_still_retried() -> None:
    import logging

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise redis.exceptions.ConnectionError("Connection refused")
        return "ok"

    assert (
        retry(flaky, "x", logging.getLogger("t"), lambda: False, max_backoff_s=0.05) == "ok"
        and len(calls) == 3
    )


# ------------------------------------------------------------ integration
@pytest.fixture
def secured_redis(tmp_path):  # type: ignore[no-untyped-def]
    """A private redis-server: default user with PASSWORD, user 'limited'
    (LIMITED_PASSWORD) that may not run scripts; killed by PID afterwards."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server on PATH")
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--requirepass",
            PASSWORD,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, password=PASSWORD)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_for(up, 10, "private redis up")
        client.execute_command(
            "ACL",
            "SETUSER",
            "limited",
            "on",
            f">{LIMITED_PASSWORD}",
            "~*",
            "&*",
            "+@all",
            "-@scripting",
        )
        client.close()
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _run_worker(args: list[str], timeout: float) -> tuple[int | str, str, float]:
    t0 = time.monotonic()
    try:
        out = subprocess.run(args, cwd=ROOT, capture_output=True, timeout=timeout)
        return (
            out.returncode,
            (out.stdout + out.stderr).decode(errors="replace"),
            time.monotonic() - t0,
        )
    except subprocess.TimeoutExpired as exc:
        return (
            "timeout",
            ((exc.stdout or b"") + (exc.stderr or b"")).decode(errors="replace"),
            time.monotonic() - t0,
        )


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_wrong_redis_password_fails_fast_naming_the_setting(
    secured_redis, kafka_bootstrap, topic_name, key_prefix
) -> None:  # type: ignore[no-untyped-def]
    port = secured_redis
    for url in (
        f"redis://:{WRONG}@127.0.0.1:{port}/0",  # userinfo
        f"redis://127.0.0.1:{port}/0?password={WRONG}",  # query
        f"redis://limited:{WRONG}@127.0.0.1:{port}/0",  # ACL user, wrong password
        f"redis://127.0.0.1:{port}/0",  # no password at all: NOAUTH
    ):
        cmd = worker_cmd(kafka_bootstrap, url, topic_name, key_prefix)
        code, out, took = _run_worker(cmd, timeout=60)
        assert code == 3, f"{mask_url(url)}: exit {code} after {took:.0f} s\n{out[-2000:]}"
        assert took < 45
        for secret in SECRETS:
            assert secret not in out, f"{mask_url(url)} leaked a secret"
        lines = [
            line for line in out.splitlines() if line.startswith("hpmf stream: configuration error")
        ]
        assert len(lines) == 1 and "HPMF_REDIS_URL" in lines[0] and "--redis-url" in lines[0], out[
            -2000:
        ]


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_missing_acl_permission_fails_fast(
    secured_redis, kafka_bootstrap, topic_name, key_prefix, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    port = secured_redis
    create_topic(kafka_bootstrap, topic_name)
    events, _ = make_events(50, 5, seed=1)
    produce(kafka_bootstrap, topic_name, events)
    url = f"redis://limited:{LIMITED_PASSWORD}@127.0.0.1:{port}/0"
    code, out, took = _run_worker(
        worker_cmd(kafka_bootstrap, url, topic_name, key_prefix), timeout=90
    )
    assert code == 3, f"exit {code} after {took:.0f} s\n{out[-2000:]}"
    lines = [
        line for line in out.splitlines() if line.startswith("hpmf stream: configuration error")
    ]
    assert len(lines) == 1 and "lacks a permission" in lines[0] and "HPMF_REDIS_URL" in lines[0], (
        out[-2000:]
    )
    assert took < 60
    assert all(secret not in out for secret in SECRETS)


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_working_password_url_is_never_logged_or_exported(
    secured_redis, kafka_bootstrap, topic_name, key_prefix, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    port = secured_redis
    create_topic(kafka_bootstrap, topic_name)
    events, counts = make_events(300, 20, seed=4)
    produce(kafka_bootstrap, topic_name, events)
    url = f"redis://127.0.0.1:{port}/0?password={PASSWORD}"
    mport = free_port()
    cmd = worker_cmd(kafka_bootstrap, url, topic_name, key_prefix, "--stop-when-idle-s", "3")
    cmd[cmd.index("--metrics-port") + 1] = str(mport)
    cmd += ["--log-level", "DEBUG"]
    log = tmp_path / "worker.log"
    client = redis.Redis(port=port, password=PASSWORD)
    scraped: list[str] = []
    with running(cmd, log) as proc:
        users = sorted(counts)
        wait_for(
            lambda: user_counts(client, key_prefix, users) == dict(counts), 90, "events applied"
        )
        for path in ("/metrics", "/healthz", "/readyz"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{mport}{path}", timeout=5) as resp:
                    scraped.append(resp.read().decode())
            except urllib.error.HTTPError as exc:
                scraped.append(exc.read().decode())
        assert proc.wait(timeout=60) == 0
    client.close()
    text = log.read_text(errors="replace")
    assert "password=***" in text  # the settings line, masked
    assert "hpmf_stream_applied_events_total 300" in scraped[0]
    for secret in SECRETS:
        assert secret not in text and all(secret not in s for s in scraped)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_kafka_authorization_errors_fail_fast(redis_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A private broker (deploy/local/kafka.sh on its own ports) with the
    standard authorizer; ACLs deny this client a topic, and a consumer group."""
    import os

    from kafka import KafkaAdminClient
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ResourcePattern, ResourceType

    port, controller = free_port(), free_port()
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "HPMF_RUN": str(tmp_path / "run"),
        "KAFKA_DATA": str(tmp_path / "kafka-data"),
        "KAFKA_EXTRA_PROPERTIES": "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n"
        "allow.everyone.if.no.acl.found=true",
    }
    kafka_sh = ["bash", str(ROOT / "deploy/local/kafka.sh")]
    started = subprocess.run(
        [*kafka_sh, "start"], env=env, capture_output=True, text=True, timeout=150
    )
    assert started.returncode == 0, started.stderr
    bootstrap = f"127.0.0.1:{port}"
    try:
        denied_topic, open_topic = "acl-denied-topic", "acl-open-topic"
        for t in (denied_topic, open_topic):
            create_topic(bootstrap, t)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_acls(
            [
                ACL(
                    "User:ANONYMOUS",
                    "*",
                    ACLOperation.READ,
                    ACLPermissionType.DENY,
                    ResourcePattern(ResourceType.TOPIC, denied_topic),
                ),
                ACL(
                    "User:ANONYMOUS",
                    "*",
                    ACLOperation.READ,
                    ACLPermissionType.DENY,
                    ResourcePattern(ResourceType.GROUP, f"g-{open_topic}"),
                ),
            ]
        )
        admin.close()
        for topic, setting in ((denied_topic, "HPMF_TOPIC"), (open_topic, "HPMF_GROUP_ID")):
            cmd = worker_cmd(
                bootstrap, redis_url, topic, f"acl-{topic}", "--create-topics", "false"
            )
            code, out, took = _run_worker(cmd, timeout=90)
            lines = [
                line
                for line in out.splitlines()
                if line.startswith("hpmf stream: configuration error")
            ]
            assert code == 3 and len(lines) == 1 and setting in lines[0], (
                f"{topic}: exit {code} after {took:.0f} s\n{out[-2000:]}"
            )
            assert took < 60
    finally:
        subprocess.run([*kafka_sh, "stop"], env=env, capture_output=True, timeout=60)
