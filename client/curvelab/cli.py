"""The client's ``curvelab`` command: ``curvelab sync FILE...`` / ``--all``.

The server's commands (``curvelab up``, ``worker``, ...) come with the
curvelab server package, whose own ``curvelab sync`` calls this.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from curvelab import env
from curvelab.sync import SyncResult, sync, sync_all


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "sync":
        if args and args[0] in ("-h", "--help"):
            _parser().print_help()
            return 0
        command = args[0] if args else "(none)"
        print(
            f"curvelab: unknown command {command!r}. This is curvelab's client, which knows "
            "`curvelab sync FILE...` and `curvelab sync --all`; the server's commands "
            "(up, worker, api, ...) come with the curvelab server package.",
            file=sys.stderr,
        )
        return 2
    options = _parser().parse_args(args[1:])
    if not options.files and not options.all:
        print("curvelab sync: name spool files, or --all", file=sys.stderr)
        return 2
    results: list[SyncResult] = []
    if options.all:
        folder = env.spool_dir(options.spool_dir)
        print(f"curvelab sync: spools in {folder}")
        results += sync_all(folder, url=options.url, token=options.token, echo=print)
    for path in options.files:
        print(f"curvelab sync: {path}")
        results.append(sync(path, url=options.url, token=options.token, echo=print))
    failed = 0
    for result in results:
        if result.ok:
            print(f"{result.path}: {result.sent} record(s) sent; done (spool deleted)")
        else:
            failed += 1
            print(
                f"{result.path}: {result.sent} sent, {result.left} left"
                + (f": {result.error}" if result.error else ""),
                file=sys.stderr,
            )
    if options.all and not results:
        print("curvelab sync: nothing to send")
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curvelab sync",
        description="Upload the records a fit with curvelab.Callback could not send "
        "(its spool files) to the curvelab server.",
    )
    parser.add_argument("files", nargs="*", help="spool files (.jsonl) to upload")
    parser.add_argument("--all", action="store_true", help="every spool in the spool folder")
    parser.add_argument("--spool-dir", help="the spool folder (default: CURVELAB_SPOOL_DIR)")
    parser.add_argument("--url", help="the API (default: the one each spool names)")
    parser.add_argument("--token", help="the API token (default: CURVELAB_API_TOKEN)")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
