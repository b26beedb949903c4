"""Run the gateway: ``python app.py [--config PATH] [--host HOST] [--port PORT]``.

The same as ``hookgate serve``; kept so the gateway can be started from a checkout.
"""
import sys

from hookgate.cli import main

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]])
