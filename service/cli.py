"""The `catalog-enricher` command: serve, migrate, tenants, keys, import, enrich-batch, sync,
shim-zip, pinpoint-config, connect-config.

Keys and other results meant for the user go to stdout; logs go to stderr as JSON lines. Commands
that touch the database use DATABASE_URL, or the embedded Postgres in ENRICHER_DATA_DIR when it is
unset (the same one `serve` uses). The key and tenant commands call the same functions as the HTTP
routes (service/storage/api_keys.py, tenants.py), and each write leaves an audit line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import json
import sys
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from service import __version__
from service.adapters.batch_run import add_enrich_batch_parser, enrich_batch
from service.adapters.sync.command import add_sync_parser
from service.catalog.cli_import import add_import_parser, import_file
from service.errors import MigrationError, ProblemError, SettingsError
from service.key_rules import check_prefix, parse_duration
from service.runtime.audit import audit, outcome_of
from service.runtime.logs import setup_logging
from service.runtime.settings import Settings
from service.storage import api_keys
from service.storage import tenants as tenant_store
from service.storage.db import connect
from service.storage.embedded_postgres import embedded_postgres
from service.storage.key_revocations import RevocationChannel
from service.storage.migrations import apply_migrations
from service.web.auth import SCOPES

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
    list_tenants = tenant_commands.add_parser("list", help="list tenants, their keys and limits")
    list_tenants.add_argument("--json", action="store_true", help="print a JSON array")
    limit = tenant_commands.add_parser(
        "limit", help="set or clear a tenant's rate limit (every process, within a second)")
    limit.add_argument("name")
    limit_value = limit.add_mutually_exclusive_group(required=True)
    limit_value.add_argument("--rps", type=int, help="requests a second, on average (1-1000000)")
    limit_value.add_argument("--clear", action="store_true", help="remove the limit")
    limit.add_argument("--burst", type=int, default=0,
                       help="requests more that may come at once after a quiet spell (default 0)")

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create_key = key_commands.add_parser("create", help="create a key; it is printed once")
    create_key.add_argument("--tenant", required=True)
    create_key.add_argument("--scope", action="append", required=True, choices=SCOPES,
                            help="a scope to grant; repeat the flag for more")
    create_key.add_argument("--label", help="a note on what the key is for")
    create_key.add_argument("--expires-in", metavar="DURATION",
                            help="expire the key after e.g. 90d, 12h, 30m, 45s (default: never)")
    list_keys = key_commands.add_parser(
        "list", help="list a tenant's keys (prefixes, never keys or hashes)")
    list_keys.add_argument("--tenant", required=True)
    list_keys.add_argument("--json", action="store_true", help="print a JSON array")
    revoke_key = key_commands.add_parser(
        "revoke", help="revoke a key: refused by every process within a second")
    revoke_key.add_argument("--tenant", required=True)
    revoke_key.add_argument("prefix", help="the key's prefix: ce_ and 8 characters")
    rotate_key = key_commands.add_parser(
        "rotate", help="a new key with the same scopes and label (printed once); the old one "
        "expires when the grace ends")
    rotate_key.add_argument("--tenant", required=True)
    rotate_key.add_argument("prefix", help="the old key's prefix: ce_ and 8 characters")
    rotate_key.add_argument("--grace", default="24h", metavar="DURATION",
                            help="how long the old key keeps working (default 24h; 0s: at once)")
    rotate_key.add_argument("--expires-in", metavar="DURATION",
                            help="expire the new key after this long (default: never)")

    add_import_parser(commands)
    add_enrich_batch_parser(commands)
    add_sync_parser(commands)

    shim = commands.add_parser("shim-zip", help="write the Lambda shim as a deployable zip")
    shim.add_argument("out", type=Path, help="the .zip file to write")

    add_pinpoint_config_parser(commands)
    add_connect_config_parser(commands)
    return parser


def add_connect_config_parser(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser(
        "connect-config",
        help="print the Lambda permission and journey setup for Amazon Connect outbound campaigns",
        description="Prints the `aws lambda add-permission` statement that lets Amazon Connect "
        "outbound campaigns (connect-campaigns.amazonaws.com) invoke the shim, and how a "
        "journey's Custom action block and the blocks after it use the answers. With --tenant "
        "and --recommender, the recommender's own attribute names.",
    )
    config.add_argument("--function-arn", required=True, help="the shim's Lambda function ARN")
    config.add_argument("--instance-arn",
                        help="the Amazon Connect instance ARN (arn:aws:connect:REGION:ACCOUNT:"
                        "instance/ID): only it may invoke the function (recommended)")
    config.add_argument("--statement-id", default="catalog-enricher-connect-campaigns",
                        help="the policy statement's ID (default catalog-enricher-connect-campaigns)")
    config.add_argument("--tenant", help="with --recommender: show that recommender's setup")
    config.add_argument("--recommender", help="with --tenant: show that recommender's setup")


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
        tenant_action = {"create": lambda conn: create_tenant(conn, args.name),
                         "list": lambda conn: print_tenants(conn, args),
                         "limit": lambda conn: limit_tenant(conn, args)}[args.tenants_command]
        return with_database(settings, tenant_action)
    if args.command == "keys":
        if args.keys_command == "revoke":
            return with_database(settings, lambda conn: revoke_key(conn, args, settings))
        key_action = {"create": create_key, "list": print_keys,
                      "rotate": rotate_key}[args.keys_command]
        return with_database(settings, lambda conn: key_action(conn, args))
    if args.command == "pinpoint-config":
        return with_database(settings, lambda conn: print_pinpoint_config(conn, args))
    if args.command == "connect-config":
        if (args.tenant is None) != (args.recommender is None):
            print("catalog-enricher: give --tenant and --recommender together, or neither",
                  file=sys.stderr)
            return 2
        if args.tenant is None:
            return print_connect_config(args)
        return with_database(settings, lambda conn: print_recommender_connect_config(conn, args))
    if args.command == "import":
        return with_database(settings, lambda conn: import_file(conn, args, settings))
    if args.command == "enrich-batch":
        with contextlib.ExitStack() as stack:
            if not settings.database_url:  # the embedded Postgres `serve` uses
                url = stack.enter_context(embedded_postgres(settings.data_dir))
                settings = dataclasses.replace(settings, database_url=url)
            return enrich_batch(settings, args)
    if args.command == "sync":
        from service.adapters.sync.command import run_sync

        return with_database_settings(settings, lambda current: run_sync(current, args))
    return 2


def with_database_settings(
    settings: Settings, action: Callable[[Settings], Awaitable[int]]
) -> int:
    """Run a command that opens its own pool, on DATABASE_URL or the embedded Postgres, after
    the pending migrations."""
    async def run(conn: asyncpg.Connection, settings: Settings) -> int:
        await apply_migrations(conn)
        await conn.close()
        return await action(settings)

    return _on_database(settings, run)


def with_database(
    settings: Settings, action: Callable[[asyncpg.Connection], Awaitable[int]]
) -> int:
    """Run one database command on DATABASE_URL, or on the embedded Postgres."""
    async def run(conn: asyncpg.Connection, settings: Settings) -> int:
        if action is not migrate:
            await apply_migrations(conn)
        return await action(conn)

    return _on_database(settings, run)


def _on_database(
    settings: Settings,
    action: Callable[[asyncpg.Connection, Settings], Awaitable[int]],
) -> int:
    """`action(conn, settings)` on DATABASE_URL, or on the embedded Postgres started for it
    (then `settings` name its URL); the connection is closed after, and a failure the user can
    act on is one line on stderr and exit status 1."""
    with contextlib.ExitStack() as stack:
        if not settings.database_url:
            url = stack.enter_context(embedded_postgres(settings.data_dir))
            settings = dataclasses.replace(settings, database_url=url)

        async def run() -> int:
            conn = await connect(settings)
            try:
                return await action(conn, settings)
            finally:
                if not conn.is_closed():
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


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's arbitrary user)
        return "unknown"


async def _audited(action: str, tenant: str, target: str | None,
                   work: Callable[[], Awaitable[str | None]]) -> None:
    """Run an admin write from the CLI and leave its audit line (refusals included); `work`
    returns the target when only it knows it (a new key's prefix)."""
    try:
        made = await work()
    except ProblemError as exc:
        audit(action, via="cli", tenant=tenant, key=None, target=target,
              outcome=outcome_of(exc.status), user=_operator(), error=exc.detail)
        raise
    audit(action, via="cli", tenant=tenant, key=None, target=made or target, outcome="ok",
          user=_operator())


async def create_tenant(conn: asyncpg.Connection, name: str) -> int:
    from service.enrichment.recommenders import NAME_PATTERN

    if not NAME_PATTERN.match(name):
        print("catalog-enricher: a tenant name is 1-64 letters, digits, '_', '.' or '-'",
              file=sys.stderr)
        return 2

    async def work() -> None:
        tenant = await tenant_store.create_tenant(conn, name)
        print(tenant.name)

    await _audited("tenant.create", name, name, work)
    return 0


async def print_tenants(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    found = await tenant_store.list_tenants(conn)
    if args.json:
        print(json.dumps([t.as_json() for t in found], indent=2))
        return 0
    rows = [(t.name, str(t.active_keys),
             "-" if t.rate_limit_rps is None else
             f"{t.rate_limit_rps} rps" + (f" + {t.rate_limit_burst} burst"
                                          if t.rate_limit_burst else ""),
             t.as_json()["created_at"]) for t in found]
    print_table(("TENANT", "ACTIVE KEYS", "RATE LIMIT", "CREATED"), rows)
    return 0


async def limit_tenant(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    if args.clear:
        rps, burst, said = None, 0, "no rate limit"
    else:
        if not 1 <= args.rps <= 1_000_000 or not 0 <= args.burst <= 1_000_000:
            print("catalog-enricher: --rps must be 1-1000000 and --burst 0-1000000",
                  file=sys.stderr)
            return 2
        rps, burst = args.rps, args.burst
        said = f"{rps} requests a second" + (f", {burst} more at once" if burst else "")

    async def work() -> None:
        await tenant_store.set_rate_limit(conn, args.name, rps, burst)

    await _audited("tenant.limit", args.name, args.name, work)
    print(f"tenant {args.name}: {said}", file=sys.stderr)
    return 0


async def create_key(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    expires_in = None if args.expires_in is None else parse_duration(args.expires_in,
                                                                       "--expires-in")
    created: list[api_keys.CreatedKey] = []

    async def work() -> str:
        tenant = await tenant_store.get_tenant(conn, args.tenant)
        made = await api_keys.create_key(conn, tenant.id, args.scope, label=args.label,
                                         expires_in=expires_in)
        created.append(made)
        return made.info.prefix

    await _audited("key.create", args.tenant, None, work)
    info = created[0].info
    expiry = f", expiring {info.as_json()['expires_at']}" if info.expires_at else ""
    print(f"key {info.prefix}… created for tenant {args.tenant} with scopes "
          f"{', '.join(info.scopes)}{expiry}; it is printed once on stdout", file=sys.stderr)
    print(created[0].key)
    return 0


async def print_keys(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    tenant = await tenant_store.get_tenant(conn, args.tenant)
    found: list[api_keys.KeyInfo] = []
    after = ""
    while True:  # every key, a page at a time
        page = await api_keys.list_keys(conn, tenant.id, after=after, limit=1000)
        found += page
        if len(page) < 1000:
            break
        after = page[-1].prefix
    found.sort(key=lambda k: (k.created_at, k.prefix))
    if args.json:
        print(json.dumps([k.as_json() for k in found], indent=2))
        return 0
    rows = []
    for key in found:
        shown = key.as_json()
        rows.append((key.prefix, key.state, ",".join(key.scopes), key.label or "-",
                     *(str(shown[f] or "-") for f in ("created_at", "last_used_at", "expires_at",
                                                      "revoked_at", "replaced_by"))))
    print_table(("PREFIX", "STATE", "SCOPES", "LABEL", "CREATED", "LAST USED", "EXPIRES",
                 "REVOKED", "REPLACED BY"), rows)
    return 0


async def revoke_key(conn: asyncpg.Connection, args: argparse.Namespace,
                     settings: Settings) -> int:
    prefix = check_prefix(args.prefix)
    outcome: list[bool] = []
    tenant_ids: list[int] = []

    async def work() -> None:
        tenant = await tenant_store.get_tenant(conn, args.tenant)
        _, revoked = await api_keys.revoke_key(conn, tenant.id, prefix)
        outcome.append(revoked)
        tenant_ids.append(tenant.id)

    await _audited("key.revoke", args.tenant, prefix, work)
    if settings.redis_url:
        # As DELETE /v1/keys/{prefix} does: a process that cannot hear from Postgres just now
        # refuses the key all the same (service/storage/key_revocations.py).
        channel = RevocationChannel(settings.redis_url, prefix=settings.redis_prefix,
                                    timeout=settings.redis_timeout, on_revoked=lambda *_: None)
        try:
            await channel.publish(tenant_ids[0], prefix)
        finally:
            await channel.close()
    print(f"key {prefix} of tenant {args.tenant} "
          + ("revoked" if outcome[0] else "was already revoked"), file=sys.stderr)
    return 0


async def rotate_key(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    prefix = check_prefix(args.prefix)
    grace = parse_duration(args.grace, "--grace", allow_zero=True)
    expires_in = None if args.expires_in is None else parse_duration(args.expires_in,
                                                                       "--expires-in")
    rotated: list[tuple[api_keys.CreatedKey, api_keys.KeyInfo]] = []

    async def work() -> None:
        tenant = await tenant_store.get_tenant(conn, args.tenant)
        rotated.append(await api_keys.rotate_key(conn, tenant.id, prefix, grace=grace,
                                                 expires_in=expires_in))

    await _audited("key.rotate", args.tenant, prefix, work)
    new, old = rotated[0]
    print(f"key {new.info.prefix}… replaces {old.prefix} (scopes {', '.join(new.info.scopes)}); "
          f"{old.prefix} works until {old.as_json()['expires_at']}; the new key is printed once "
          "on stdout", file=sys.stderr)
    print(new.key)
    return 0


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=True)).rstrip())


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


async def print_recommender_connect_config(conn: asyncpg.Connection,
                                           args: argparse.Namespace) -> int:
    from service.enrichment.recommender_lookup import recommender_from_row
    from service.storage import recommenders as recommender_store

    tenant = await tenant_store.get_tenant(conn, args.tenant)
    row = await recommender_store.fetch_recommender(conn, tenant.id, args.recommender)
    if row is None:
        print(f"catalog-enricher: tenant {tenant.name} has no recommender named "
              f"{args.recommender!r}", file=sys.stderr)
        return 1
    return print_connect_config(args, recommender_from_row(tenant.id, row).spec)


def print_connect_config(args: argparse.Namespace, spec: object = None) -> int:
    """The add-permission statement, the instance integration, then the journey's side."""
    from service.adapters import connect_setup
    from service.adapters.pinpoint_setup import SetupError

    setup = connect_setup.ConnectSetup(function_arn=args.function_arn,
                                       instance_arn=args.instance_arn,
                                       statement_id=args.statement_id)
    try:
        params = connect_setup.add_permission(setup)
    except SetupError as exc:
        print(f"catalog-enricher: {exc}", file=sys.stderr)
        return 2
    if "SourceArn" not in params:
        print("catalog-enricher: without --instance-arn any Connect instance"
              + (" of that account" if "SourceAccount" in params else "")
              + " may invoke the function; the guide recommends limiting it to yours",
              file=sys.stderr)
    print("# 1. Let Amazon Connect outbound campaigns invoke the shim:")
    print(connect_setup.add_permission_command(params))
    integration = connect_setup.instance_integration_command(setup)
    print("\n# 2. List the function for the instance's journeys (or in the console: Outbound "
          "campaigns >\n#    Set up custom actions, which adds the permission of step 1 too):")
    print(integration or "#    (give --instance-arn, and the function's full ARN, for the "
          "put-connect-instance-integration command)")
    print("\n# 3. " + "\n#    ".join(connect_setup.journey_lines(
        setup, args.recommender, spec)))  # type: ignore[arg-type]
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
