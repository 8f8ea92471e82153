"""The Amazon Connect side: what lets outbound campaigns invoke the shim, and how a journey reads
its answers. `catalog-enricher connect-config` prints what this module builds.

Per the Amazon Connect administrator guide ("Invoke Lambda functions"), outbound campaigns invoke
the function as the `connect-campaigns.amazonaws.com` service principal; a resource-based policy
statement must allow it, best limited to the account (`AWS:SourceAccount`) and the Connect
instance (`AWS:SourceArn`). The console's "Set up custom actions" (or the outbound campaigns API's
PutConnectInstanceIntegration) adds that statement itself and also lists the function for the
journey's Custom action block; `aws lambda add-permission` adds the statement alone (cross-account
setups, or where policies are managed as code).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from service.adapters.pinpoint_setup import SetupError, check_function_arn
from service.enrichment.recommenders import RecommenderSpec

PRINCIPAL = "connect-campaigns.amazonaws.com"
DEFAULT_STATEMENT_ID = "catalog-enricher-connect-campaigns"
_PARTITION = r"arn:aws(?:-[a-z]+)*"
INSTANCE_PATTERN = re.compile(
    rf"^{_PARTITION}:connect:[a-z0-9-]+:(\d{{12}}):instance/([A-Za-z0-9-]{{1,100}})$")
FUNCTION_ACCOUNT = re.compile(rf"^{_PARTITION}:lambda:[a-z0-9-]+:(\d{{12}}):function:")
STATEMENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")  # Lambda's StatementId


@dataclass(frozen=True)
class ConnectSetup:
    function_arn: str
    instance_arn: str | None = None
    statement_id: str = DEFAULT_STATEMENT_ID


def add_permission(setup: ConnectSetup) -> dict[str, str]:
    """Lambda AddPermission's parameters for the connect-campaigns principal."""
    _check(setup)
    params = {"FunctionName": setup.function_arn, "StatementId": setup.statement_id,
              "Action": "lambda:InvokeFunction", "Principal": PRINCIPAL}
    account = source_account(setup)
    if account:
        params["SourceAccount"] = account
    if setup.instance_arn:
        params["SourceArn"] = setup.instance_arn
    return params


def source_account(setup: ConnectSetup) -> str | None:
    """The account outbound campaigns call from: the Connect instance's, else (no instance
    named) the function's own."""
    found = INSTANCE_PATTERN.match(setup.instance_arn or "") or \
        FUNCTION_ACCOUNT.match(setup.function_arn)
    return found.group(1) if found else None


def add_permission_command(params: dict[str, str]) -> str:
    flags = {"FunctionName": "--function-name", "StatementId": "--statement-id",
             "Action": "--action", "Principal": "--principal",
             "SourceAccount": "--source-account", "SourceArn": "--source-arn"}
    lines = ["aws lambda add-permission"]
    lines += [f"  {flags[key]} {shlex.quote(value)}" for key, value in params.items()]
    return " \\\n".join(lines)


def instance_integration_command(setup: ConnectSetup) -> str | None:
    """The outbound campaigns API call that lists the function for the instance's journeys (and
    adds the same statement), when the instance is known."""
    found = INSTANCE_PATTERN.match(setup.instance_arn or "")
    if found is None or not FUNCTION_ACCOUNT.match(setup.function_arn):
        return None  # the API takes a function's full ARN only
    config = '{"lambda":{"functionArn":"' + setup.function_arn + '"}}'
    return ("aws connectcampaignsv2 put-connect-instance-integration \\\n"
            f"  --connect-instance-id {shlex.quote(found.group(2))} \\\n"
            f"  --integration-config {shlex.quote(config)}")


def journey_lines(setup: ConnectSetup, recommender: str | None,
                  spec: RecommenderSpec | None) -> list[str]:
    """How a journey uses the answers: the block to add, then the paths later blocks read."""
    names = [a.name for a in spec.attributes] if spec else ["Title", "Price"]
    lines = [
        "In the journey: a Custom action block (Integrate group), Function ARN",
        f"  {setup.function_arn}",
        "Each customer profile's answer is then at $.LambdaInvocation.ResultData:",
        "  $.LambdaInvocation.ResultData.send       true when there is something to show: "
        "branch on it first",
    ]
    lines += [f"  $.LambdaInvocation.ResultData.Recommendations.{name}" for name in names]
    lines += [
        "  $.LambdaInvocation.ResultData.items      the items, each with id and "
        + ", ".join(names),
        "  $.LambdaInvocation.ResultData.reason     why not, when send is false",
    ]
    if recommender is not None and spec is not None:
        connect = spec.connect
        if connect is not None and connect.ids_from:
            source = f"the profile's {connect.ids_from}"
        elif spec.personalize is not None:
            user = connect.user_id_from if connect else "ProfileId"
            source = f"Amazon Personalize, for the user at {user}"
        else:
            source = None
        lines.append(
            f"Recommender {recommender} takes each profile's items from {source}."
            if source else f"Recommender {recommender} has no connect block yet: add "
            '"connect": {"ids_from": "Attributes.<your attribute>"} (or a personalize block), '
            "else every profile is answered send: false.")
        lines.append(f"The shim's ENRICHER_CONNECT_URL: https://<host>/v1/recommenders/"
                     f"{recommender}/connect")
    return lines


def _check(setup: ConnectSetup) -> None:
    check_function_arn(setup.function_arn)
    if setup.instance_arn is not None and not INSTANCE_PATTERN.match(setup.instance_arn):
        raise SetupError("--instance-arn must be an Amazon Connect instance ARN "
                         "(arn:aws:connect:REGION:ACCOUNT:instance/ID)")
    if not STATEMENT_ID_PATTERN.match(setup.statement_id):
        raise SetupError("--statement-id must be 1-100 letters, digits, '_' or '-'")
