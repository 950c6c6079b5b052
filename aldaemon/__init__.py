"""aldaemon: a live active-learning loop for a self-hosted Label Studio."""

__version__ = "0.1.0"
