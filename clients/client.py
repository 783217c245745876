"""`chorus client ...`: clients of a running Chorus server (stream, transcribe)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from clients import client_stream, client_transcribe

    client = sub.add_parser("client", help="clients of a running Chorus server")
    client_sub = client.add_subparsers(dest="client_command", required=True)
    client_stream.register(client_sub)
    client_transcribe.register(client_sub)
