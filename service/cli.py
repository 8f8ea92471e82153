"""The `catalog-enricher` command: serve, migrate, tenants, keys, import, shim-zip, pinpoint-config.

Keys and other results meant for the user go to stdout; logs go to stderr as JSON lines. Commands
that touch the database use DATABASE_URL, or the embedded Postgres in ENRICHER_DATA_DIR when it is
unset (the same one `serve` uses).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from service import __version__
from service.catalog.cli_import import add_import_parser, import_file
from service.errors import MigrationError, ProblemError, SettingsError
from service.runtime.logs import setup_logging
from service.runtime.settings import Settings
from service.storage import tenants as tenant_store
from service.storage.db import connect
from service.storage.embedded_postgres import embedded_postgres
from service.storage.migrations import apply_migrations
from service.web.auth import SCOPES, generate_key, validate_scopes

SHIM_PATH = Path(__file__).with_name("lambda_shim.py")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catalog-enricher",
        description="Resolve recommended item IDs into message content from a Postgres catalog.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="address to bind (default: ENRICHER_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: ENRICHER_PORT or 8080; 0 picks one)")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes sharing the port (default 1; one core each)")
    serve.add_argument("--demo", action="store_true",
                       help="load a demo catalog and recommender; print a key and a curl line")

    commands.add_parser("migrate", help="apply pending database migrations")

    tenants = commands.add_parser("tenants", help="manage tenants")
    tenant_commands = tenants.add_subparsers(dest="tenants_command", required=True)
    create_tenant = tenant_commands.add_parser("create", help="create a tenant")
    create_tenant.add_argument("name")

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create_key = key_commands.add_parser("create", help="create a key; it is printed once")
    create_key.add_argument("--tenant", required=True)
    create_key.add_argument("--scope", action="append", required=True, choices=SCOPES,
                            help="a scope to grant; repeat the flag for more")
    create_key.add_argument("--label", help="a note on what the key is for")

    add_import_parser(commands)

    shim = commands.add_parser("shim-zip", help="write the Lambda shim as a deployable zip")
    shim.add_argument("out", type=Path, help="the .zip file to write")

    add_pinpoint_config_parser(commands)
    return parser


def add_pinpoint_config_parser(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser(
        "pinpoint-config",
        help="print a recommender's CreateRecommenderConfiguration JSON for Amazon Pinpoint",
        description="Prints the object `aws pinpoint create-recommender-configuration "
        "--create-recommender-configuration file://config.json` takes, with the recommender's "
        "attributes as Recommendations.<Name>, so names never drift between the two sides.",
    )
    config.add_argument("--tenant", required=True)
    config.add_argument("--recommender", required=True)
    config.add_argument("--function-arn", required=True,
                        help="the shim's Lambda function ARN (RecommendationTransformerUri)")
    config.add_argument("--campaign-arn",
                        help="the Amazon Personalize campaign (RecommendationProviderUri)")
    config.add_argument("--role-arn",
                        help="the IAM role Pinpoint assumes to read the campaign "
                        "(RecommendationProviderRoleArn)")
    config.add_argument("--name", help="the configuration's name (default: the recommender's)")
    config.add_argument("--description")
    config.add_argument("--id-type", default="PINPOINT_ENDPOINT_ID",
                        choices=("PINPOINT_ENDPOINT_ID", "PINPOINT_USER_ID"),
                        help="which Pinpoint ID the Personalize users are "
                        "(RecommendationProviderIdType; default PINPOINT_ENDPOINT_ID)")
    config.add_argument("--display-name",
                        help="display name of the standard RecommendationItems attribute")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"catalog-enricher: {exc}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("host", getattr(args, "host", None)),
                                   ("port", getattr(args, "port", None))) if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    setup_logging(settings.log_level)

    if args.command == "shim-zip":
        return write_shim_zip(args.out)
    if args.command == "serve":
        from service.server import run_server

        if args.workers < 1:
            print("catalog-enricher: --workers must be at least 1", file=sys.stderr)
            return 2
        return run_server(settings, workers=args.workers, demo=args.demo)
    if args.command == "migrate":
        return with_database(settings, migrate)
    if args.command == "tenants":
        return with_database(settings, lambda conn: create_tenant(conn, args.name))
    if args.command == "keys":
        return with_database(settings, lambda conn: create_key(conn, args))
    if args.command == "pinpoint-config":
        return with_database(settings, lambda conn: print_pinpoint_config(conn, args))
    if args.command == "import":
        return with_database(settings, lambda conn: import_file(conn, args, settings))
    return 2


def with_database(
    settings: Settings, action: Callable[[asyncpg.Connection], Awaitable[int]]
) -> int:
    """Run one database command on DATABASE_URL, or on the embedded Postgres."""
    with contextlib.ExitStack() as stack:
        if not settings.database_url:
            url = stack.enter_context(embedded_postgres(settings.data_dir))
            settings = dataclasses.replace(settings, database_url=url)

        async def run() -> int:
            conn = await connect(settings)
            try:
                if action is not migrate:
                    await apply_migrations(conn)
                return await action(conn)
            finally:
                await conn.close()

        try:
            return asyncio.run(run())
        except (MigrationError, ProblemError, RuntimeError) as exc:
            print(f"catalog-enricher: {exc}", file=sys.stderr)
            return 1


async def migrate(conn: asyncpg.Connection) -> int:
    applied = await apply_migrations(conn)
    names = ", ".join(m.filename for m in applied) or "none (already current)"
    print(f"migrations applied: {names}", file=sys.stderr)
    return 0


async def create_tenant(conn: asyncpg.Connection, name: str) -> int:
    from service.enrichment.recommenders import NAME_PATTERN

    if not NAME_PATTERN.match(name):
        print("catalog-enricher: a tenant name is 1-64 letters, digits, '_', '.' or '-'",
              file=sys.stderr)
        return 2
    tenant = await tenant_store.create_tenant(conn, name)
    print(tenant.name)
    return 0


async def create_key(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    scopes = validate_scopes(args.scope)
    tenant = await tenant_store.get_tenant(conn, args.tenant)
    key = generate_key()
    await tenant_store.insert_key(conn, tenant.id, key.prefix, key.key_hash, scopes, args.label)
    print(
        f"key {key.prefix}… created for tenant {tenant.name} with scopes {', '.join(scopes)}; "
        "it is printed once on stdout",
        file=sys.stderr,
    )
    print(key.key)
    return 0


async def print_pinpoint_config(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    from service.adapters.pinpoint_setup import (
        PinpointSetup,
        SetupError,
        missing_for_pinpoint,
        recommender_configuration,
    )
    from service.enrichment.recommender_lookup import recommender_from_row
    from service.storage import recommenders as recommender_store

    tenant = await tenant_store.get_tenant(conn, args.tenant)
    row = await recommender_store.fetch_recommender(conn, tenant.id, args.recommender)
    if row is None:
        print(f"catalog-enricher: tenant {tenant.name} has no recommender named "
              f"{args.recommender!r}", file=sys.stderr)
        return 1
    recommender = recommender_from_row(tenant.id, row)
    setup = PinpointSetup(
        function_arn=args.function_arn, campaign_arn=args.campaign_arn, role_arn=args.role_arn,
        name=args.name, description=args.description, id_type=args.id_type,
        display_name=args.display_name,
    )
    try:
        config = recommender_configuration(recommender.name, recommender.spec, setup)
    except SetupError as exc:
        print(f"catalog-enricher: {exc}", file=sys.stderr)
        return 2
    missing = missing_for_pinpoint(config)
    if missing:
        print("catalog-enricher: Pinpoint also requires " + " and ".join(missing)
              + "; add them before creating the configuration", file=sys.stderr)
    print(json.dumps(config, indent=2, ensure_ascii=False))
    return 0


def write_shim_zip(out: Path) -> int:
    """A zip holding only lambda_shim.py at its root (handler: lambda_shim.handler)."""
    info = zipfile.ZipInfo("lambda_shim.py", date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(info, SHIM_PATH.read_bytes())
    print(f"wrote {out} (handler: lambda_shim.handler)", file=sys.stderr)
    return 0
