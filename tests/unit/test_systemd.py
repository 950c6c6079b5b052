"""sd_notify over a real datagram socket, watchdog settings, and the shipped unit file."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aldaemon.service import systemd
from tests.lsserver import REPO_ROOT

UNIT_FILE = REPO_ROOT / "deploy" / "aldaemon.service"
INSTALLED_EXECUTABLE = "/opt/aldaemon/venv/bin/aldaemon"


def parse(datagram: bytes) -> dict[str, str]:
    """One sd_notify datagram as {KEY: value}."""
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket in a tmp dir, named by NOTIFY_SOCKET, like systemd's."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield receiver


class TestNotify:
    def test_without_notify_socket_nothing_is_sent(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Outside systemd, notify returns False and does not raise."""
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        assert False is systemd.ready()

    def test_a_message_arrives_verbatim(self, notify_socket: socket.socket) -> None:
        """The message is one datagram holding exactly the text given."""
        systemd.notify("READY=1\nSTATUS=hello")
        assert b"READY=1\nSTATUS=hello" == notify_socket.recv(4096)

    def test_messages_arrive_in_order_and_parse(self, notify_socket: socket.socket) -> None:
        """A life cycle of helper calls arrives as datagrams in call order, each KEY=value."""
        systemd.ready()
        systemd.status("3 projects")
        systemd.watchdog()
        systemd.reloading()
        systemd.stopping()
        received = [parse(notify_socket.recv(4096)) for _ in range(5)]
        keys = [sorted(message) for message in received]
        assert [
            ["READY"],
            ["STATUS"],
            ["WATCHDOG"],
            ["MONOTONIC_USEC", "RELOADING"],
            ["STOPPING"],
        ] == keys

    def test_helpers_report_success(self, notify_socket: socket.socket) -> None:
        """A sent notification returns True."""
        assert True is systemd.watchdog()

    def test_reloading_carries_the_current_monotonic_clock(
        self, notify_socket: socket.socket
    ) -> None:
        """MONOTONIC_USEC lies between CLOCK_MONOTONIC read just before and just after."""
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        systemd.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        message = parse(notify_socket.recv(4096))
        assert ("1", True) == (
            message["RELOADING"],
            before <= int(message["MONOTONIC_USEC"]) <= after,
        )

    def test_status_folds_newlines_into_one_line(self, notify_socket: socket.socket) -> None:
        """A multi-line status cannot inject a second assignment."""
        systemd.status("degraded\nREADY=1")
        assert {"STATUS": "degraded READY=1"} == parse(notify_socket.recv(4096))

    def test_abstract_namespace_socket(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A NOTIFY_SOCKET starting with '@' addresses the abstract namespace."""
        name = f"aldaemon-test-{uuid.uuid4().hex}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(b"\0" + name.encode())
            receiver.settimeout(5)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
            systemd.ready()
            assert b"READY=1" == receiver.recv(4096)

    def test_a_vanished_socket_returns_false(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A NOTIFY_SOCKET path nobody listens on gives False, not an exception."""
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
        assert False is systemd.ready()

    def test_an_unsupported_socket_form_returns_false(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A vsock: address (newer systemd, VMs) is not spoken and gives False."""
        monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
        assert False is systemd.ready()


class TestWatchdogInterval:
    def test_interval_is_watchdog_usec_in_seconds(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """WATCHDOG_USEC=120000000 for this pid means 120 seconds."""
        monkeypatch.setenv("WATCHDOG_USEC", "120000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        assert 120.0 == systemd.watchdog_interval()

    def test_interval_without_watchdog_pid_applies_to_us(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without WATCHDOG_PID the interval applies to whoever reads it."""
        monkeypatch.setenv("WATCHDOG_USEC", "5000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        assert 5.0 == systemd.watchdog_interval()

    def test_another_pid_gets_none(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A child that inherited the environment of the watched process does not ping."""
        monkeypatch.setenv("WATCHDOG_USEC", "120000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
        assert None is systemd.watchdog_interval()

    def test_no_watchdog_gives_none(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without WATCHDOG_USEC there is no watchdog."""
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        assert None is systemd.watchdog_interval()

    @pytest.mark.parametrize("value", ["", "0", "-5", "soon", "1.5"])
    def test_unusable_values_give_none(self, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """A WATCHDOG_USEC that is not a positive integer disables the watchdog."""
        monkeypatch.setenv("WATCHDOG_USEC", value)
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        assert None is systemd.watchdog_interval()


class TestUnitFile:
    def test_exec_start_runs_the_installed_daemon(self) -> None:
        """ExecStart runs `aldaemon run` from the documented venv with the /etc config."""
        lines = UNIT_FILE.read_text().splitlines()
        expected = f"ExecStart={INSTALLED_EXECUTABLE} run --config /etc/aldaemon/config.toml"
        assert [expected] == [line for line in lines if line.startswith("ExecStart=")]

    def test_systemd_analyze_verify_finds_nothing(self, tmp_path: Path) -> None:
        """`systemd-analyze verify` reports no problem with the unit.

        verify insists that the binaries of ExecStart and ExecReload exist, so a copy points
        the venv at stubs in a tmp dir; every other line is verified as shipped.
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
        for name in ("aldaemon", "python"):
            stub = tmp_path / name
            stub.write_text("#!/bin/sh\n")
            stub.chmod(0o755)
        unit = tmp_path / "aldaemon.service"
        venv_bin = str(Path(INSTALLED_EXECUTABLE).parent)
        unit.write_text(UNIT_FILE.read_text().replace(venv_bin, str(tmp_path)))
        result = subprocess.run(
            [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
        )
        assert (0, "") == (result.returncode, result.stderr + result.stdout)
