"""Read-only views of local state: `aldaemon status` and `aldaemon report`."""
