"""The `chorus` command. Each package registers its own subcommands; heavy imports are lazy."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Each module's register() adds its subcommands; it imports only the standard library at
# module level, so optional extras are needed only by the commands that use them.
COMMAND_MODULES = ["models.cli", "server.cli", "clients.demo", "clients.client", "loadtest.cli",
                   "training.cli", "training.lm.cli"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chorus", description="Chorus streaming speech recognition")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    from models.audio import AudioError

    try:
        return int(args.func(args) or 0)
    except AudioError as exc:  # bad input: one clear line, no traceback
        print(f"chorus: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
