"""deploy/template.yaml: the SAM template for the shim lints clean and holds what Pinpoint needs,
and, as an option, what Amazon Connect outbound campaigns need."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cfnlint.decode import decode

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "template.yaml"
# The console script installed with the test extra, as CI or a developer would run it.
CFN_LINT = str(Path(sys.executable).with_name("cfn-lint"))


@pytest.fixture(scope="module")
def template() -> dict:
    parsed, problems = decode(str(TEMPLATE))
    assert not problems, problems
    return parsed


class TestTemplate:
    """cfn-lint passes, and the function, its key and Pinpoint's permission are as documented."""

    def test_cfn_lint_passes(self):
        result = subprocess.run(
            [CFN_LINT, str(TEMPLATE)],
            capture_output=True, text=True, timeout=110, check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_cfn_lint_would_fail_a_broken_template(self, tmp_path):
        broken = tmp_path / "broken.yaml"
        broken.write_text(TEMPLATE.read_text().replace("Runtime: python3.12",
                                                       "Runtime: python2.7"))
        result = subprocess.run([CFN_LINT, str(broken)],
                                capture_output=True, text=True, timeout=110, check=False)
        assert result.returncode != 0
        assert "python2.7" in result.stdout

    def test_function(self, template):
        function = template["Resources"]["ShimFunction"]
        assert function["Type"] == "AWS::Serverless::Function"
        props = function["Properties"]
        assert props["Handler"] == "lambda_shim.handler"
        assert props["Runtime"] == "python3.12"
        assert props["CodeUri"] == "shim.zip"
        assert props["Timeout"] == {"Ref": "TimeoutSeconds"}
        # Connect's wait; the shim holds a Pinpoint event to Pinpoint's 15 s whatever this is.
        assert template["Parameters"]["TimeoutSeconds"]["MaxValue"] == 30
        assert props["ReservedConcurrentExecutions"] == {"Ref": "ReservedConcurrency"}
        assert template["Parameters"]["ReservedConcurrency"]["Default"] == 256
        variables = props["Environment"]["Variables"]
        assert set(variables) == {"ENRICHER_URL", "ENRICHER_CONNECT_URL", "ENRICHER_MARGIN_MS",
                                  "ENRICHER_API_KEY_SECRET_ARN", "ENRICHER_API_KEY_PARAMETER"}
        assert variables["ENRICHER_CONNECT_URL"] == {
            "Fn::If": ["OwnConnectUrl", {"Ref": "EnricherConnectUrl"}, {"Ref": "AWS::NoValue"}]}
        assert "ENRICHER_API_KEY" not in variables  # never a key in plain environment

    @pytest.mark.parametrize("name", ["PinpointInvokePermission",
                                      "PinpointGlobalInvokePermission"])
    def test_pinpoint_may_invoke_for_its_recommenders_only(self, template, name):
        permission = template["Resources"][name]
        assert permission["Type"] == "AWS::Lambda::Permission"
        props = permission["Properties"]
        assert props["Action"] == "lambda:InvokeFunction"
        assert props["FunctionName"] == {"Fn::GetAtt": ["ShimFunction", "Arn"]}
        assert props["SourceArn"] == {"Fn::Sub": "arn:${AWS::Partition}:mobiletargeting:"
                                      "${AWS::Region}:${AWS::AccountId}:recommenders/*"}
        assert props["Principal"] in ({"Fn::Sub": "pinpoint.${AWS::Region}.amazonaws.com"},
                                      "pinpoint.amazonaws.com")

    def test_connect_campaigns_may_invoke_from_the_instance_given_only(self, template):
        permission = template["Resources"]["ConnectCampaignsInvokePermission"]
        assert permission["Condition"] == "ConnectCampaigns"
        assert template["Conditions"]["ConnectCampaigns"] == {
            "Fn::Not": [{"Fn::Equals": [{"Ref": "ConnectInstanceArn"}, ""]}]}
        props = permission["Properties"]
        assert props["Principal"] == "connect-campaigns.amazonaws.com"
        assert props["Action"] == "lambda:InvokeFunction"
        assert props["FunctionName"] == {"Fn::GetAtt": ["ShimFunction", "Arn"]}
        assert props["SourceArn"] == {"Ref": "ConnectInstanceArn"}
        # The instance's account: the fifth field of its ARN.
        assert props["SourceAccount"] == {
            "Fn::Select": [4, {"Fn::Split": [":", {"Ref": "ConnectInstanceArn"}]}]}
        instance = "arn:aws:connect:eu-west-2:210987654321:instance/4a5b6c7d-1111-2222-3333"
        assert instance.split(":")[4] == "210987654321"
        pattern = template["Parameters"]["ConnectInstanceArn"]["AllowedPattern"]
        assert template["Parameters"]["ConnectInstanceArn"]["Default"] == ""
        assert re.fullmatch(pattern, instance) and re.fullmatch(pattern, "")
        for wrong in ("arn:aws:connect:eu-west-2:2109876543:instance/x", "instance/x",
                      "arn:aws:lambda:eu-west-2:210987654321:function:f"):
            assert not re.fullmatch(pattern, wrong)

    def test_shim_zip_holds_the_handler(self, tmp_path):
        out = tmp_path / "shim.zip"
        subprocess.run([sys.executable, "-m", "service", "shim-zip", str(out)],
                       capture_output=True, timeout=60, check=True)
        with zipfile.ZipFile(out) as archive:
            assert archive.namelist() == ["lambda_shim.py"]
            source = archive.read("lambda_shim.py").decode()
        assert "def handler(event, context)" in source
        # Stdlib only at import: boto3 is imported inside the function that needs it.
        top_level = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
        assert not [line for line in top_level if "boto" in line or "service" in line]
