"""Entry point that dispatches to one module per sub-command.

Each sub-command module ``cli/<name>.py`` exposes ``register(subparsers)`` which adds its
parser and sets ``func`` (taking the parsed namespace, returning an exit status). User errors
(:class:`~napari_vae_anomaly.errors.AnomalyError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import AnomalyError

#: sub-command modules, in the order ``--help`` lists them
SUBCOMMANDS: tuple[str, ...] = ("train", "predict", "evaluate", "benchmark", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-vae-anomaly",
        description="Unsupervised anomaly localization in medical scans with (beta-)VAEs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    handler = _warnings_to_stderr(args.command)
    try:
        return int(args.func(args) or 0)
    except AnomalyError as exc:
        print(f"napari-vae-anomaly {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-vae-anomaly {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        logging.getLogger("napari_vae_anomaly").removeHandler(handler)


def _warnings_to_stderr(command: str) -> logging.Handler:
    """Print the package's logged warnings (volume notes) as one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(f"napari-vae-anomaly {command}: warning: %(message)s"))
    logger = logging.getLogger("napari_vae_anomaly")
    logger.addHandler(handler)
    return handler


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
