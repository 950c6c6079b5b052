"""sd_notify(3) in a few lines, so the daemon needs no libsystemd binding.

The protocol is one datagram per message on the AF_UNIX socket named by $NOTIFY_SOCKET:
newline-separated `KEY=value` assignments. A name starting with '@' is in the abstract
namespace (the '@' becomes a NUL byte). Outside systemd the variable is unset and every
call here is a silent no-op returning False, so the daemon can call them unconditionally.

The daemon's side of the life cycle (unit: Type=notify, NotifyAccess=main):

    start -> ready()  ...  watchdog() every watchdog_interval()/2  ...
    SIGHUP -> reloading() -> reload config -> ready()
    SIGTERM -> stopping() -> finish the running cycles -> exit

Sending never raises: a lost notification must not take the daemon down, and systemd
itself notices a missing READY=1 or WATCHDOG=1 and acts on it.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger(__name__)

# A blocked send would stall the event loop; systemd drains its queue quickly.
_SEND_TIMEOUT_SECONDS = 1.0


def _socket_address(notify_socket: str) -> str | bytes | None:
    """The sockaddr for $NOTIFY_SOCKET, or None for a form we do not speak (e.g. vsock:)."""
    if notify_socket.startswith("@"):
        return b"\0" + notify_socket[1:].encode()
    if notify_socket.startswith("/"):
        return notify_socket
    return None


def notify(message: str) -> bool:
    """Send `message` to systemd; True when it was sent, False when there is no socket."""
    notify_socket = os.environ.get("NOTIFY_SOCKET", "")
    if not notify_socket:
        return False
    address = _socket_address(notify_socket)
    if address is None:
        log.debug("systemd.notify_unsupported_socket", notify_socket=notify_socket)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(_SEND_TIMEOUT_SECONDS)
            sock.sendto(message.encode(), address)
    except OSError as error:
        log.warning("systemd.notify_failed", error=str(error), notify_socket=notify_socket)
        return False
    return True


def ready() -> bool:
    """Tell systemd start-up (or a reload) is complete."""
    return notify("READY=1")


def stopping() -> bool:
    """Tell systemd the daemon is shutting down on purpose."""
    return notify("STOPPING=1")


def reloading() -> bool:
    """Tell systemd a reload began; send `ready()` when it is done.

    MONOTONIC_USEC lets systemd (Type=notify-reload, v253+) tell this reload from an
    earlier one; older versions ignore it.
    """
    monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")


def watchdog() -> bool:
    """Keep-alive: systemd restarts the unit when these stop for WatchdogSec."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """One line shown by `systemctl status`; newlines would end the assignment."""
    one_line = " ".join(text.splitlines())
    return notify(f"STATUS={one_line}")


def watchdog_interval() -> float | None:
    """WatchdogSec in seconds when systemd expects pings from this process, else None.

    Ping at half of it, as sd_watchdog_enabled(3) advises. WATCHDOG_PID, when set, names
    the process that must ping; a child that inherited the environment gets None.
    """
    usec_text = os.environ.get("WATCHDOG_USEC", "")
    pid_text = os.environ.get("WATCHDOG_PID", "")
    try:
        usec = int(usec_text)
    except ValueError:
        return None
    if usec <= 0:
        return None
    if pid_text:
        try:
            if int(pid_text) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000
