"""``curvelab``: the command-line entry point (argparse, one function per subcommand).

Defaults come from the ``CURVELAB_*`` environment through :class:`Settings`,
read after parsing so that ``--help`` works even when the environment is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from backend.cli import parts
from backend.cli.predictor import predict_worker_argv
from backend.settings import Settings

EPILOG = """\
Settings are read from CURVELAB_* environment variables (CURVELAB_DATA_DIR,
CURVELAB_REDIS_URL, CURVELAB_DATABASE_URL, CURVELAB_API_TOKEN, ...); the options
above override them. `up` writes each part's output to DATA_DIR/logs/<part>.log
and prints only where things are and what it restarts.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curvelab",
        description="Train CNNs on your image datasets and watch the loss curves live.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="start Redis (if none answers), a worker, the API and the UI; Ctrl-C stops all",
        description="Start everything locally and keep it running: a worker, the API and the "
        "UI are restarted if they die. Their output goes to DATA_DIR/logs/{worker,api,ui}.log "
        "(and redis.log for a redis-server started here). Ctrl-C or SIGTERM stops all of it.",
    )
    _data_options(up)
    _host_option(up)
    _api_port_option(up)
    _ui_port_option(up)
    up.add_argument("--no-ui", action="store_true", help="start no UI (API and worker only)")
    up.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="training workers to start: each trains one run at a time, so a sweep "
        "runs this many at once (default: %(default)s)",
    )

    api = commands.add_parser("api", help="run the API in the foreground (uvicorn)")
    _data_options(api)
    _host_option(api)
    _api_port_option(api)

    worker = commands.add_parser("worker", help="run one training worker in the foreground")
    _data_options(worker)

    predictor = commands.add_parser(
        "predict-worker",
        help="run one predict worker in the foreground (answers POST /api/runs/{id}/predict)",
    )
    _data_options(predictor)

    ui = commands.add_parser("ui", help="run the UI in the foreground (streamlit)")
    _host_option(ui)
    _ui_port_option(ui)
    _api_url_option(ui)

    demo = commands.add_parser(
        "demo",
        help="upload a generated character dataset and start a tiny run",
        description="Render a small dataset of characters (no download), upload it, start a "
        "run with the 'tiny' preset, and print where to watch it.",
    )
    _api_url_option(demo)
    demo.add_argument(
        "--ui-url",
        default="http://127.0.0.1:8501",
        help="the UI's address, for the printed link (default: %(default)s)",
    )
    demo.add_argument("--classes", type=int, default=6, help="classes (default: %(default)s)")
    demo.add_argument(
        "--per-class", type=int, default=60, help="images per class (default: %(default)s)"
    )

    migrate = commands.add_parser(
        "migrate",
        help="upgrade the database to this version's schema (the API and workers also do at start)",
        description="Apply the schema migrations this version has and the database lacks; a "
        "database made before migrations is recognised by its columns first. Safe while the "
        "API or workers run: one process migrates at a time.",
    )
    migrate.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the SQLite database is, unless CURVELAB_DATABASE_URL names another "
        "(default: $CURVELAB_DATA_DIR or ./data)",
    )
    shown = migrate.add_mutually_exclusive_group()
    shown.add_argument(
        "--current", action="store_true", help="only print the revision the database is at"
    )
    shown.add_argument(
        "--sql",
        action="store_true",
        help="only print the SQL that builds a new database up to the newest revision",
    )

    # Parsed by the client's own command (main() hands it every argument):
    # listed here for --help.
    commands.add_parser(
        "sync",
        add_help=False,
        help="upload what an external run's callback could not send (FILE...); "
        "`curvelab sync --help` says more",
    )
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 64")
    return value


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="datasets, runs, SQLite, logs (default: $CURVELAB_DATA_DIR or ./data)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="Celery broker and event streams "
        "(default: $CURVELAB_REDIS_URL or redis://127.0.0.1:6379/0)",
    )


def _host_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s; 0.0.0.0 for all)",
    )


def _api_port_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-port", type=int, default=8000, help="the API's port (default: %(default)s)"
    )


def _ui_port_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ui-port", type=int, default=8501, help="the UI's port (default: %(default)s)"
    )


def _api_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-url",
        default=None,
        help="where the API answers (default: $CURVELAB_API_URL or http://127.0.0.1:8000)",
    )


def resolve(args: argparse.Namespace, settings: Settings) -> argparse.Namespace:
    """Fill the options left unset from the settings (that is, the environment)."""
    if getattr(args, "data_dir", "absent") is None:
        args.data_dir = settings.data_dir
    if getattr(args, "data_dir", None) is not None:
        args.data_dir = Path(args.data_dir).expanduser().resolve()
    if getattr(args, "redis_url", "absent") is None:
        args.redis_url = settings.redis_url
    if getattr(args, "api_url", "absent") is None:
        args.api_url = settings.api_url
    if getattr(args, "api_url", None):
        args.api_url = args.api_url.rstrip("/")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["sync"]:
        return _sync(given[1:])
    args = build_parser().parse_args(given)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"curvelab: invalid CURVELAB_* environment:\n{exc}", file=sys.stderr)
        return 2
    args = resolve(args, settings)
    if args.command == "up":
        return _up(args, settings)
    if args.command == "demo":
        return _demo(args, settings)
    if args.command == "migrate":
        return _migrate(args, settings)
    return _foreground(args, settings)


def _foreground(args: argparse.Namespace, settings: Settings) -> int:
    """api, worker, ui: become that process, so signals and the exit code are its own."""
    if args.command == "ui":
        try:
            argv = parts.ui_argv(args.host, args.ui_port, max_upload_mb=settings.max_upload_mb)
        except FileNotFoundError as exc:
            print(f"curvelab ui: {exc}", file=sys.stderr)
            return 1
        env = parts.ui_env(os.environ, api_url=args.api_url)  # never the API token
    else:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        if args.command == "api":
            argv = parts.api_argv(args.host, args.api_port)
            api_url = parts.http_url(args.host, args.api_port)
        elif args.command == "predict-worker":
            argv = predict_worker_argv()
            api_url = settings.api_url
        else:
            argv = parts.worker_argv()
            api_url = settings.api_url
        env = parts.child_env(data_dir=args.data_dir, redis_url=args.redis_url, api_url=api_url)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)
    return 0  # not reached: execve replaced this process


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from backend.cli.demo import DemoError, run_demo

    try:
        run_demo(
            api_url=args.api_url,
            ui_url=args.ui_url.rstrip("/"),
            classes=args.classes,
            per_class=args.per_class,
            token=settings.api_token,
        )
    except DemoError as exc:
        print(f"curvelab demo: {exc}", file=sys.stderr)
        return 1
    return 0


def _sync(argv: list[str]) -> int:
    """``curvelab sync FILE...``: the client package's command (the server's
    ``curvelab`` script is the one left in .venv/bin, see the Makefile)."""
    try:
        from curvelab import cli  # the client package (client/), installed beside the server
    except ImportError as exc:
        print(
            f"curvelab sync: the client package is not installed ({exc}); pip install -e ./client",
            file=sys.stderr,
        )
        return 2
    code: int = cli.main(["sync", *argv])
    return code


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from backend import schema
    from backend.db import make_engine

    url = settings.model_copy(update={"data_dir": args.data_dir}).sqlalchemy_url
    if args.sql:
        print(schema.upgrade_sql(url), end="")
        return 0
    if not settings.database_url:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        if args.current:
            now = schema.current(engine)
            state = "the newest" if now == schema.head() else f"the newest is {schema.head()}"
            print(f"{where}: at revision {now or 'none'} ({state})")
            return 0
        done = schema.upgrade(engine)
    except SQLAlchemyError as exc:
        print(f"curvelab migrate: {where}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if done.stamped:
        print(f"{where}: made before migrations; its columns match revision {done.stamped}")
    if done.applied:
        print(f"{where}: applied {', '.join(done.applied)}; now at revision {done.after}")
    elif done.after != schema.head():
        print(f"{where}: at revision {done.after}, newer than this version's {schema.head()}")
    else:
        print(f"{where}: already at the newest revision, {done.after}")
    return 0


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from backend.cli.up import UpOptions, run_up

    return run_up(
        UpOptions(
            data_dir=args.data_dir,
            host=args.host,
            api_port=args.api_port,
            ui_port=args.ui_port,
            redis_url=args.redis_url,
            no_ui=args.no_ui,
            workers=args.workers,
            api_token=settings.api_token,
            max_upload_mb=settings.max_upload_mb,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
