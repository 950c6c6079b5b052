"""The shipped unit under a real systemd as PID 1, against the suite's real Label Studio.

A minimal Debian 12 root (`debootstrap --variant=minbase`, plus systemd and python3-venv;
no libnss-systemd, so the service's dynamic user has no passwd entry and no home) is built
once and cached; each run boots a copy with `systemd-nspawn -b --register=no --keep-unit`.
The guest shares the host's network, so it reaches the suite's Label Studio on 127.0.0.1.
Commands run inside with `nsenter -t <guest init> -a`. The install steps are the `sh`
blocks of deploy/README.md between its install markers, run verbatim; the unit file is
the one in deploy/, unchanged; one drop-in shortens `WatchdogSec` so the watchdog test
does not wait two minutes.

Needs root, `debootstrap` and `systemd-nspawn` (Debian: debootstrap, systemd-container;
`.ci/run` installs them). Without them the module skips with the reason, except when
CI=true, where it fails. ALDAEMON_TEST_CACHE (default /var/cache/aldaemon-test) holds the
cached root and the guest's pip cache; ALDAEMON_TEST_DEBIAN_MIRROR picks the mirror.

    build root (once) -> copy -> boot -> README install steps -> systemctl enable --now
        -> READY=1 -> version published -> reload -> kill -9 -> SIGSTOP (watchdog)
        -> broken config (exit 78, no restart) -> journal: JSON lines, no secret
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.lsserver import REPO_ROOT, LabelStudioClient, LabelStudioServer, free_port

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

DEPLOY = REPO_ROOT / "deploy"
CACHE = Path(os.environ.get("ALDAEMON_TEST_CACHE", "/var/cache/aldaemon-test"))
MIRROR = os.environ.get("ALDAEMON_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = "systemd,systemd-sysv,dbus,python3-venv"
# Two roots: without libnss-systemd the dynamic user has no passwd entry and no home (as in
# containers and minimal cloud images); with it, it has both. The suffix is bumped when a
# recipe changes, so a stale cache is rebuilt.
ROOTS = {
    "minbase": ("bookworm-minbase-1", BASE_PACKAGES),
    "minbase+libnss-systemd": ("bookworm-minbase-nss-1", BASE_PACKAGES + ",libnss-systemd"),
}
WATCHDOG_SECONDS = 10
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
GUEST_CA_BUNDLE = "/run/host-ca-certificates.crt"
INSTALL_DIR = "/root/aldaemon-install"
UNIT = "aldaemon.service"

T = TypeVar("T")


def _missing_requirement() -> str | None:
    if os.geteuid() != 0:
        return "booting systemd in a container needs root"
    for tool, package in (
        ("debootstrap", "debootstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
    ):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian package {package})"
    return None


@pytest.fixture(scope="module", autouse=True)
def _requirements() -> None:
    missing = _missing_requirement()
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{missing} (CI=true: the systemd unit test must not be skipped)")
    pytest.skip(missing)


def wait_until(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.5
) -> T:
    """Poll `probe` until it returns something truthy, and return that; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def install_blocks(readme: str) -> list[str]:
    """The `sh` blocks between deploy/README.md's install markers, in order."""
    begin = readme.index("<!-- install:begin")
    end = readme.index("<!-- install:end -->")
    return re.findall(r"```sh\n(.*?)```", readme[begin:end], flags=re.S)


def cached_debian_root(kind: str) -> Path:
    """A minimal Debian root with systemd, built once (about a minute) and reused."""
    name, packages = ROOTS[kind]
    root = CACHE / name
    if (root / "usr" / "lib" / "systemd" / "systemd").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    building = CACHE / f"{name}.building"
    shutil.rmtree(building, ignore_errors=True)
    target = [str(building), MIRROR]
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={packages}", "bookworm", *target],
        check=True,
        capture_output=True,
        timeout=1200,
    )
    building.rename(root)
    return root


@dataclass
class Guest:
    """A booted container: `run` executes a shell command inside it as root."""

    nspawn: subprocess.Popen[bytes]
    init_pid: int
    root: Path

    def run(
        self, command: str, *, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        environment = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        assignments = [f"{key}={value}" for key, value in environment.items()]
        shell = ["sh", "-ec", f"cd {INSTALL_DIR} && {command}"]
        done = subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-a", "env", "-i", *assignments, *shell],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"in the guest, `{command}` exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def unit(self) -> dict[str, str]:
        """The unit's state as `systemctl show` reports it."""
        properties = "ActiveState,SubState,MainPID,NRestarts,ExecMainStatus,Result"
        out = self.run(f"systemctl show {UNIT} -p {properties}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *arguments: str) -> str:
        return self.run("journalctl --no-pager -o cat " + " ".join(arguments)).stdout

    def daemon_lines(self) -> list[str]:
        """What the daemon's processes wrote (not systemd's own lines about the unit)."""
        return [line for line in self.journal(f"_SYSTEMD_UNIT={UNIT}").splitlines() if line]

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.daemon_lines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("event") == name:
                found.append(record)
        return found


def _container_init_pid(nspawn: subprocess.Popen[bytes]) -> int | None:
    """The container's PID 1, seen from the host: the nspawn process's child."""
    children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children")
    try:
        pids = children.read_text().split()
    except OSError:
        return None
    return int(pids[0]) if pids else None


def _copy_source(destination: Path) -> None:
    """The repository's files as a checkout has them (what a user copies to the server)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name.decode()
        if not source.is_file():
            continue
        target = destination / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


@pytest.fixture(scope="module", params=list(ROOTS))
def guest(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Guest]:
    cached = cached_debian_root(request.param)
    root = tmp_path_factory.mktemp("guest") / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(cached), str(root)], check=True)
    _copy_source(root / "opt" / "aldaemon" / "src")
    (root / INSTALL_DIR.lstrip("/")).mkdir(parents=True)
    dropin = root / "etc" / "systemd" / "system" / f"{UNIT}.d"
    dropin.mkdir(parents=True)
    (dropin / "test-watchdog.conf").write_text(f"[Service]\nWatchdogSec={WATCHDOG_SECONDS}\n")
    pip_cache = CACHE / "pip-cache"
    pip_cache.mkdir(parents=True, exist_ok=True)
    command = [
        "systemd-nspawn",
        "--quiet",
        f"--directory={root}",
        "--boot",
        "--register=no",
        "--keep-unit",
        "--console=pipe",
        f"--bind={pip_cache}:/root/.cache/pip",
    ]
    if HOST_CA_BUNDLE.is_file():
        # Lets the guest's pip trust whatever the host trusts (a proxy's CA, here).
        command.append(f"--bind-ro={HOST_CA_BUNDLE}:{GUEST_CA_BUNDLE}")
    console = (tmp_path_factory.mktemp("guest-console") / "console.log").open("wb")
    nspawn = subprocess.Popen(command, stdout=console, stderr=subprocess.STDOUT)
    try:
        init_pid = wait_until(
            lambda: _container_init_pid(nspawn) if nspawn.poll() is None else -1,
            timeout=60,
            what="systemd-nspawn to start the container's init",
        )
        assert init_pid != -1, f"systemd-nspawn exited {nspawn.returncode}"
        booted = Guest(nspawn=nspawn, init_pid=init_pid, root=root)
        wait_until(
            lambda: (
                booted.run("systemctl is-system-running --wait", check=False).stdout.strip()
                in ("running", "degraded")
            ),
            timeout=120,
            what="the guest's boot to finish",
        )
        yield booted
    finally:
        nspawn.send_signal(signal.SIGTERM)  # nspawn asks the guest's systemd to power off
        try:
            nspawn.wait(timeout=60)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait()
        console.close()


@dataclass
class Installed:
    guest: Guest
    project_id: int
    token: str
    webhook_secret: str
    config: str


def _config_toml(readme: str, *, url: str, project_id: int, listen_port: int) -> str:
    """deploy/README.md's example config, pointed at the suite's server and made quick."""
    example = re.search(r"```toml\n(.*?)```", readme, flags=re.S)
    assert example is not None, "deploy/README.md has no toml example"
    text = example.group(1)
    text = text.replace('url = "http://127.0.0.1:8080"', f'url = "{url}"')
    text = text.replace("poll_interval = 30", "poll_interval = 2")
    text = text.replace('listen = "127.0.0.1:9090"', f'listen = "127.0.0.1:{listen_port}"')
    text = text.replace("id = 1\n", f"id = {project_id}\n")
    return text + "[projects.retrain]\nmin_new_annotations = 4\nmin_interval = 0\n"


@pytest.fixture(scope="module")
def installed(guest: Guest, label_studio: LabelStudioServer) -> Installed:
    """The README's install steps, run verbatim in the guest, on a labeled project."""
    client = LabelStudioClient(label_studio)
    project_id = client.create_project(title="systemd unit")
    words = ("good", "bad")
    tasks = client.import_tasks(
        project_id, [{"text": f"{words[i % 2]} thing number {i}"} for i in range(40)]
    )
    for index, task_id in enumerate(tasks[:8]):
        client.annotate(task_id, "pos" if index % 2 == 0 else "neg")
    readme = (DEPLOY / "README.md").read_text()
    config = _config_toml(
        readme, url=label_studio.url, project_id=project_id, listen_port=free_port()
    )
    (guest.root / INSTALL_DIR.lstrip("/") / "config.toml").write_text(config)
    token = label_studio.pat
    environment = {"TOKEN": token}
    if HOST_CA_BUNDLE.is_file():
        environment["PIP_CERT"] = GUEST_CA_BUNDLE
    for block in install_blocks(readme):
        guest.run(block, env=environment)
    secret = guest.run("cat /etc/aldaemon/webhook-secret").stdout.strip()
    return Installed(guest, project_id, token, secret, config)


class TestTheShippedUnit:
    """Run in order: each test leaves the service running for the next."""

    def test_start_returns_after_ready_and_the_loop_publishes_a_version(
        self, installed: Installed, ls_client: LabelStudioClient
    ) -> None:
        """`systemctl enable --now` came back with the unit active, then a version goes live."""
        # Type=notify: before READY=1 the unit is "activating", so "active" proves it.
        assert "active" == installed.guest.unit()["ActiveState"]
        version = wait_until(
            lambda: ls_client.get_project(installed.project_id).get("model_version") or None,
            timeout=300,
            what="the daemon to activate its first version",
        )
        assert "aldaemon-v1" == version
        finished = wait_until(
            lambda: installed.guest.events("cycle.finished"),
            timeout=60,
            what="cycle.finished in the journal",
        )
        assert "aldaemon-v1" in [record.get("version") for record in finished]

    def test_credentials_and_state_land_where_the_unit_says(self, installed: Installed) -> None:
        """The token came from LoadCredential; the state is in StateDirectory, dynamic user."""
        # The token file is root-only and the dynamic user is not root: the daemon that
        # published a version can only have read the token through LoadCredential.
        assert "token =" not in installed.config
        token_file = installed.guest.run("stat -c '%u %a' /etc/aldaemon/labelstudio-token")
        assert "0 600" == token_file.stdout.strip()
        state = installed.guest.run(
            "stat -c '%u %a' /var/lib/private/aldaemon /var/lib/private/aldaemon/aldaemon.sqlite3"
        ).stdout.split("\n")
        owner, mode = state[0].split()
        assert (True, "700") == (61184 <= int(owner) <= 65519, mode)
        assert state[1].split()[0] == owner

    def test_reload_rereads_the_config_with_the_same_main_pid(self, installed: Installed) -> None:
        """`systemctl reload` is SIGHUP: config.reloaded, and the process is not replaced."""
        guest = installed.guest
        before = guest.unit()["MainPID"]
        reloads = len(guest.events("config.reloaded"))
        guest.run(f"systemctl reload {UNIT}")
        wait_until(
            lambda: len(guest.events("config.reloaded")) > reloads,
            timeout=60,
            what="config.reloaded in the journal",
        )
        assert (before, "active") == (guest.unit()["MainPID"], guest.unit()["ActiveState"])

    def test_kill_9_of_the_main_process_is_restarted(self, installed: Installed) -> None:
        """Restart=on-failure brings a SIGKILLed daemon back with a new main pid."""
        guest = installed.guest
        before = guest.unit()
        guest.run(f"kill -9 {before['MainPID']}")
        after = wait_until(
            lambda: _restarted(guest, before),
            timeout=120,
            what="systemd to restart the killed daemon",
        )
        assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1

    def test_a_hung_daemon_is_killed_by_the_watchdog_and_restarted(
        self, installed: Installed
    ) -> None:
        """A stopped process sends no WATCHDOG=1: systemd aborts it and starts a new one."""
        guest = installed.guest
        before = guest.unit()
        guest.run(f"kill -STOP {before['MainPID']}")
        wait_until(
            lambda: _restarted(guest, before),
            timeout=WATCHDOG_SECONDS * 12,
            what="the watchdog to restart the hung daemon",
        )
        assert "Watchdog timeout" in guest.journal(f"-u {UNIT}")

    def test_a_broken_config_exits_78_and_is_not_restarted(self, installed: Installed) -> None:
        """Exit 78 (EX_CONFIG) leaves the unit failed, not in a restart loop."""
        guest = installed.guest
        guest.run("cp /etc/aldaemon/config.toml /root/config.good")
        guest.run("printf '[daemon]\\npoll_interval = -1\\n' > /etc/aldaemon/config.toml")
        started = guest.run(f"systemctl restart {UNIT}", check=False)
        assert 0 != started.returncode
        state = wait_until(
            lambda: (unit := guest.unit())["ActiveState"] == "failed" and unit,
            timeout=60,
            what="the unit to fail",
        )
        # systemd decides at the exit: a restart shows SubState "auto-restart" and logs
        # "Scheduled restart job"; "failed" is final.
        assert ("failed", "78") == (state["SubState"], state["ExecMainStatus"])
        since_restart = guest.journal(f"-u {UNIT}").split("Stopping aldaemon.service")[-1]
        assert "Scheduled restart job" not in since_restart
        guest.run("cp /root/config.good /etc/aldaemon/config.toml")
        guest.run(f"systemctl restart {UNIT}")
        assert "active" == guest.unit()["ActiveState"]

    def test_the_journal_is_json_lines_without_a_secret(self, installed: Installed) -> None:
        """Every line the daemon wrote parses as JSON; neither secret appears anywhere."""
        lines = installed.guest.daemon_lines()
        not_json = [line for line in lines if not _is_json_object(line)]
        # Two kinds of plain lines are expected, and documented in deploy/README.md: the
        # broken-config start prints its problems to stderr (the header line and one
        # indented line per problem), and after the kill -9 / watchdog abort above,
        # Python's multiprocessing resource tracker (a child the dead daemon left behind)
        # warns about the semaphores it cleans up.
        not_json = [line for line in not_json if "invalid configuration" not in line]
        not_json = [line for line in not_json if not line.startswith("  ")]
        not_json = [line for line in not_json if not _RESOURCE_TRACKER.search(line)]
        assert [] == not_json
        everything = installed.guest.journal()
        assert (False, False) == (
            installed.token in everything,
            installed.webhook_secret in everything,
        )


def _restarted(guest: Guest, before: dict[str, str]) -> dict[str, str] | None:
    unit = guest.unit()
    moved_on = unit["MainPID"] not in ("0", before["MainPID"])
    if moved_on and unit["ActiveState"] == "active" and unit["NRestarts"] != before["NRestarts"]:
        return unit
    return None


_RESOURCE_TRACKER = re.compile(r"resource_tracker|leaked semaphore|warnings\.warn\(")


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False
