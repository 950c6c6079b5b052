"""aldaemon: a live active-learning loop for a self-hosted Label Studio.

Before anything else is imported, make sure a home directory can be determined. A
systemd service with `DynamicUser=yes` on a minimal system (no libnss-systemd, as in
containers and minimal cloud images) has neither $HOME nor a passwd entry, and a
dependency (label-studio-sdk -> smart_open) calls `Path.expanduser()` at import time,
which then raises "Could not determine home directory." and ends the daemon before it
can log a word. aldaemon reads nothing from a home directory, so a missing one is set
to the service's state directory (or `/` when there is none): a value that exists and
that a dependency may read from, never one it should write to.
"""

import os
import pwd


def _ensure_home_directory() -> None:
    if os.environ.get("HOME"):
        return
    try:
        pwd.getpwuid(os.getuid())
    except KeyError:
        state_directories = os.environ.get("STATE_DIRECTORY", "")
        os.environ["HOME"] = state_directories.split(":")[0] or "/"


_ensure_home_directory()

__version__ = "0.1.0"
