"""`catalog-enricher connect-config`: the `aws lambda add-permission` statement for Amazon Connect
outbound campaigns and the instance integration, checked against botocore's own service models
(types, lengths, patterns) and sent through a botocore client stubbed at its HTTP layer, with no
network; and the journey's side, with the recommender's attribute names."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys

import botocore.session
import pytest
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from service.cli import build_parser, print_connect_config
from tests.support.api import Api
from tests.support.catalogs import load_catalog

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:catalog-enricher-shim"
INSTANCE = "arn:aws:connect:us-east-1:210987654321:instance/4a5b6c7d-1111-2222-3333-444455556666"
FLAGS = {"--function-name": "FunctionName", "--statement-id": "StatementId",
         "--action": "Action", "--principal": "Principal", "--source-account": "SourceAccount",
         "--source-arn": "SourceArn", "--connect-instance-id": "connectInstanceId",
         "--integration-config": "integrationConfig"}


def command(out: str, starts: str) -> dict[str, str] | None:
    """The parameters of the printed `aws ...` command that starts with `starts`."""
    text = out[out.index(starts):].split("\n\n")[0] if starts in out else None
    if text is None:
        return None
    words = shlex.split(text.replace("\\\n", " "))
    assert " ".join(words[:3]) == starts, words
    flags = words[3:]
    return {FLAGS[flag]: value for flag, value in zip(flags[::2], flags[1::2], strict=True)}


def model_errors(service: str, operation: str, params: dict) -> list[str]:
    """What botocore's validator and the model's own patterns refuse in `params`."""
    shape = botocore.session.get_session().get_service_model(service) \
        .operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    errors = [report.generate_report()] if report.has_errors() else []
    for name, value in params.items():
        pattern = shape.members[name].metadata.get("pattern")
        if pattern and isinstance(value, str) and not re.fullmatch(pattern, value):
            errors.append(f"{name}: {value!r} does not match {pattern}")
    return errors


def run(capsys, *args: str, spec=None) -> tuple[int, str, str]:
    parsed = build_parser().parse_args(["connect-config", *args])
    code = print_connect_config(parsed, spec)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class TestPermission:
    """The statement lets connect-campaigns.amazonaws.com invoke the function, from the
    instance's account and the instance only, as Lambda's API takes it."""

    def test_add_permission_passes_botocore(self, capsys, aws_isolated):
        code, out, err = run(capsys, "--function-arn", FUNCTION, "--instance-arn", INSTANCE)
        assert (code, err) == (0, "")
        params = command(out, "aws lambda add-permission")
        assert params == {"FunctionName": FUNCTION,
                          "StatementId": "catalog-enricher-connect-campaigns",
                          "Action": "lambda:InvokeFunction",
                          "Principal": "connect-campaigns.amazonaws.com",
                          "SourceAccount": "210987654321", "SourceArn": INSTANCE}
        assert model_errors("lambda", "AddPermission", params) == []
        client = botocore.session.get_session().create_client(
            "lambda", region_name="us-east-1", aws_access_key_id="testing",
            aws_secret_access_key="testing")
        with Stubber(client) as stub:
            stub.add_response("add_permission", {"Statement": "{}"}, params)
            assert client.add_permission(**params)["Statement"] == "{}"

    def test_the_instance_integration_passes_botocore(self, capsys, aws_isolated):
        _, out, _ = run(capsys, "--function-arn", FUNCTION, "--instance-arn", INSTANCE)
        params = command(out, "aws connectcampaignsv2 put-connect-instance-integration")
        assert params is not None
        params["integrationConfig"] = json.loads(params["integrationConfig"])
        assert params == {"connectInstanceId": "4a5b6c7d-1111-2222-3333-444455556666",
                          "integrationConfig": {"lambda": {"functionArn": FUNCTION}}}
        assert model_errors("connectcampaignsv2", "PutConnectInstanceIntegration", params) == []
        lambda_arn = botocore.session.get_session().get_service_model("connectcampaignsv2") \
            .shape_for("LambdaArn").metadata["pattern"]
        assert re.fullmatch(lambda_arn, FUNCTION)

    def test_the_check_can_fail(self):
        """The validation above refuses what Lambda would."""
        assert model_errors("lambda", "AddPermission", {"FunctionName": FUNCTION,
                                                        "StatementId": "a b", "Action": "x",
                                                        "Principal": "p"})
        assert model_errors("lambda", "AddPermission", {"FunctionName": FUNCTION})

    def test_without_an_instance(self, capsys):
        code, out, err = run(capsys, "--function-arn", FUNCTION, "--statement-id", "mine")
        assert code == 0
        params = command(out, "aws lambda add-permission")
        assert params["SourceAccount"] == "123456789012" and "SourceArn" not in params
        assert params["StatementId"] == "mine"
        assert command(out, "aws connectcampaignsv2") is None
        assert "--instance-arn" in out and "recommends limiting it to yours" in err

    @pytest.mark.parametrize(("args", "flag"), [
        (("--function-arn", "not an arn"), "--function-arn"),
        (("--function-arn", FUNCTION, "--instance-arn", "arn:aws:connect:us-east-1:1:x"),
         "--instance-arn"),
        (("--function-arn", FUNCTION, "--statement-id", "has space"), "--statement-id"),
    ])
    def test_bad_flag_named(self, capsys, args, flag):
        code, out, err = run(capsys, *args)
        assert (code, out) == (2, "")
        assert flag in err


class TestJourney:
    """How the journey reads the answers, with the recommender's own names."""

    def test_generic(self, capsys):
        _, out, _ = run(capsys, "--function-arn", FUNCTION)
        assert "Custom action block" in out and FUNCTION in out
        assert "$.LambdaInvocation.ResultData.send" in out

    async def test_a_recommenders_names_and_source(self, admin: Api, subprocess_env):
        await load_catalog(admin, "movies", [{"id": "1", "title": "One"}])
        status, body, _ = await admin.put("/v1/recommenders/movies", {
            "catalog": "movies", "attributes": [{"name": "Headline", "field": "title"},
                                                {"name": "Poster", "field": "image_url"}],
            "connect": {"ids_from": "Attributes.picks"}})
        assert status == 201, body

        async def cli(*args: str) -> tuple[int, str, str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service", "connect-config", "--function-arn", FUNCTION,
                *args, env=subprocess_env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), 60)
            return process.returncode, out.decode(), err.decode()

        code, out, err = await cli("--instance-arn", INSTANCE, "--tenant", "acme",
                                   "--recommender", "movies")
        assert code == 0, err
        assert "$.LambdaInvocation.ResultData.Recommendations.Headline" in out
        assert "$.LambdaInvocation.ResultData.Recommendations.Poster" in out
        assert "from the profile's Attributes.picks" in out
        assert "/v1/recommenders/movies/connect" in out
        code, _, err = await cli("--tenant", "acme", "--recommender", "nope")
        assert code == 1 and "nope" in err
        code, _, err = await cli("--tenant", "acme")
        assert code == 2 and "together" in err
