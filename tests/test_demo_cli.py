"""``make demo`` refuses a taken metrics port before doing anything, in one line
(the service used to die on it at step 3 of 7, after the broker and the
simulation had been set up)."""

from __future__ import annotations

import socket
import subprocess
import sys

from test_stream_support import ROOT


def test_a_taken_metrics_port_is_one_line_error_before_any_step() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "streamer.cli.demo", "--metrics-port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"[demo] error: port 127.0.0.1:{port} (the service's metrics) is already in use "
        "by another process; choose another: DEMO_METRICS_PORT=<port> make demo"
    )
    assert "1/7" not in done.stdout  # no step ran
