"""The Pinpoint side of a recommender: the `CreateRecommenderConfiguration` object, made from the
recommender itself so attribute names can never drift between this service and Pinpoint.

`catalog-enricher pinpoint-config` prints what this module builds; it is the object that
`aws pinpoint create-recommender-configuration --create-recommender-configuration file://...`
takes. Pinpoint's own limits are checked here (names, lengths, ARNs), so a bad flag is reported
before AWS refuses the call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from service.enrichment.recommenders import DISPLAY_NAME_PATTERN, RecommenderSpec

PROVIDER_ID_TYPES = ("PINPOINT_ENDPOINT_ID", "PINPOINT_USER_ID")
# Pinpoint: a configuration name starts with a letter or digit; up to 128 letters, digits, spaces,
# '_' and '-'. Descriptions are up to 128 characters; the display name of the standard
# RecommendationItems attribute follows the rule of every display name.
CONFIG_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,127}$")
MAX_DESCRIPTION = 128
_PARTITION = r"arn:aws(?:-[a-z]+)*"
FUNCTION_PATTERN = re.compile(
    rf"^(?:{_PARTITION}:lambda:[a-z0-9-]+:\d{{12}}:function:)?[A-Za-z0-9_-]{{1,64}}"
    r"(?::(?:\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)
CAMPAIGN_PATTERN = re.compile(rf"^{_PARTITION}:personalize:[a-z0-9-]+:\d{{12}}:campaign/[^\s]+$")
ROLE_PATTERN = re.compile(rf"^{_PARTITION}:iam::\d{{12}}:role/[\w+=,.@/-]{{1,512}}$")


class SetupError(ValueError):
    """A flag Pinpoint would refuse; the message names the flag."""


@dataclass(frozen=True)
class PinpointSetup:
    function_arn: str
    campaign_arn: str | None = None
    role_arn: str | None = None
    name: str | None = None
    description: str | None = None
    id_type: str = "PINPOINT_ENDPOINT_ID"
    display_name: str | None = None


def recommender_configuration(
    recommender: str, spec: RecommenderSpec, setup: PinpointSetup
) -> dict[str, Any]:
    """The inner `CreateRecommenderConfiguration` object for one recommender."""
    _check(setup)
    config: dict[str, Any] = {
        "Name": setup.name or _default_name(recommender),
        "RecommendationTransformerUri": setup.function_arn,
        "RecommendationsPerMessage": spec.recommendations_per_message,
        "RecommendationProviderIdType": setup.id_type,
        "Attributes": {f"Recommendations.{a.name}": a.shown_name for a in spec.attributes},
    }
    if setup.campaign_arn:
        config["RecommendationProviderUri"] = setup.campaign_arn
    if setup.role_arn:
        config["RecommendationProviderRoleArn"] = setup.role_arn
    if setup.description:
        config["Description"] = setup.description
    if setup.display_name:
        config["RecommendationsDisplayName"] = setup.display_name
    return config


def missing_for_pinpoint(config: dict[str, Any]) -> list[str]:
    """Keys Pinpoint requires that the flags did not give (the caller warns about them)."""
    flags = {"RecommendationProviderUri": "--campaign-arn",
             "RecommendationProviderRoleArn": "--role-arn"}
    return [f"{key} ({flag})" for key, flag in flags.items() if key not in config]


def _default_name(recommender: str) -> str:
    # Recommender names may hold '.', which Pinpoint names may not.
    return recommender.replace(".", "-")


def check_function_arn(function_arn: str) -> None:
    """The shim's function, as `--function-arn` names it (a setup command's flag)."""
    if not FUNCTION_PATTERN.match(function_arn):
        raise SetupError("--function-arn must be a Lambda function ARN "
                         "(arn:aws:lambda:REGION:ACCOUNT:function:NAME) or a function name")


def _check(setup: PinpointSetup) -> None:
    check_function_arn(setup.function_arn)
    if setup.campaign_arn is not None and not CAMPAIGN_PATTERN.match(setup.campaign_arn):
        raise SetupError("--campaign-arn must be an Amazon Personalize campaign ARN "
                         "(arn:aws:personalize:REGION:ACCOUNT:campaign/NAME)")
    if setup.role_arn is not None and not ROLE_PATTERN.match(setup.role_arn):
        raise SetupError("--role-arn must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    if setup.name is not None and not CONFIG_NAME_PATTERN.match(setup.name):
        raise SetupError("--name must start with a letter or digit and hold up to 128 letters, "
                         "digits, spaces, '_' or '-'")
    if setup.description is not None and len(setup.description) > MAX_DESCRIPTION:
        raise SetupError(f"--description must be at most {MAX_DESCRIPTION} characters")
    if setup.id_type not in PROVIDER_ID_TYPES:
        raise SetupError("--id-type must be one of: " + ", ".join(PROVIDER_ID_TYPES))
    if setup.display_name is not None and not DISPLAY_NAME_PATTERN.match(setup.display_name):
        raise SetupError("--display-name must be 1-25 letters, digits, spaces, '_' or '-'")
