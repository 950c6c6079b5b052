"""The demo: aldaemon on a local Label Studio (`make demo`); not part of the wheel."""
