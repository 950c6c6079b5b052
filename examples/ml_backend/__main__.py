"""`python -m examples.ml_backend --port 9090`: serve the example ML backend."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from examples.ml_backend.server import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description="An example Label Studio ML backend.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9090, help="port (default 9090)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    web.run_app(create_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
