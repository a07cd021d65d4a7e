"""The local gateway's command line.

``python -m vwo_heap_middleware.testing.gateway (--settings F | --flags F) [--segments F]
--port N`` (``--init DIR``: the demo's files to start from).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from pathlib import Path

from . import SAMPLES
from .errors import GatewayDataError
from .server import LocalGateway


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vwo_heap_middleware.testing.gateway",
        description="A local VWO FME gateway: settings, events, attribute lists, user details.",
    )
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--settings", metavar="FILE", help="raw VWO settings JSON")
    data.add_argument("--flags", metavar="FILE", help="concise flags file (TOML)")
    data.add_argument(
        "--init",
        metavar="DIR",
        help="write the demo's flags.toml and segments.json into DIR to start from, and stop",
    )
    parser.add_argument("--segments", metavar="FILE", help="Heap segments: JSON or CSV")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: loopback)")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--enable-control",
        action="store_true",
        help="turn on the /_gateway/faults, /settings, /segments and /refuse control endpoints",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    args = parser.parse_args(argv)
    if args.init is not None:
        return init(Path(args.init))
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    try:
        gateway = LocalGateway.from_files(
            settings_file=args.settings,
            flags_file=args.flags,
            segments_file=args.segments,
            host=args.host,
            port=args.port,
            tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
            enable_control=args.enable_control,
            access_log=not args.quiet,
        )
        gateway.start()
    except GatewayDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port} ({exc.strerror})", file=sys.stderr)
        return 2
    print(
        f"VWO local gateway on {gateway.url} (records: {gateway.url}/_gateway/records)",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        gateway.serve_forever()
    return 0


def init(directory: Path) -> int:
    """Copy the sample flags file and segments into ``directory`` (never over a file)."""
    written = []
    for sample in sorted(SAMPLES.iterdir()):
        target = directory / sample.name
        if target.exists():
            print(f"error: {target} exists: not overwritten", file=sys.stderr)
            return 2
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample, target)
        written.append(str(target))
    print(f"wrote {', '.join(written)}; now:")
    print(
        f"python -m vwo_heap_middleware.testing.gateway --flags {directory / 'flags.toml'} "
        f"--segments {directory / 'segments.json'} --port 8787"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
