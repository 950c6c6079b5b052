"""The demo: aldaemon on a local Label Studio with a public dataset (`make demo`).

It lives beside the package, not in it: the wheel carries the daemon only, while the demo
needs a clone of the repository (scripts/install-label-studio.sh) and the `demo` extra.
The local Label Studio launcher here (demo/labelstudio.py) also runs the test suite's
server (tests/lsserver.py), so the demo and the tests meet Label Studio set up one way.
"""
