"""The OpenAPI document at /api/v1/openapi.json, and Schemathesis (PyPI) run against the real server.

Schemathesis generates requests from the document, valid and invalid, and checks every answer against it:
no 5xx (507 excepted: it is the precise answer to a declared length beyond the free space), statuses,
content types, headers and bodies as documented, invalid input refused, valid input accepted. Bounded and
seeded: the same requests every run. SCHEMATHESIS_EXAMPLES raises the bound for a longer run."""
import os
import re
import subprocess
from pathlib import Path

import requests

from conftest import ROOT
from helpers import SUMMARY

HERE = Path(__file__).resolve().parent
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25"))


def test_the_document_is_served_and_names_every_api_route(server):
    response = requests.get(f"{server.url}/api/v1/openapi.json", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    from test_access_matrix import MATRIX
    documented = {("/api/v1" + path, method.upper()) for path, item in document["paths"].items()
                  for method in item if method != "parameters"}
    # `**` is the router's catch-all: an entry's path inside an archive, `{path}` in the document.
    routes = {(re.sub(r":(\w+)", r"{\1}", route).replace("/**", "/{path}"), method) for route, method, *_ in MATRIX
              if route.startswith("/api/v1/") and route != "/api/v1/openapi.json"}
    assert documented == routes


def test_schemathesis_finds_nothing(server):
    environment = dict(os.environ, SCHEMATHESIS_HOOKS="st_hooks", PYTHONPATH=str(HERE))
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "st"), "--config-file", str(HERE / "schemathesis.toml"), "run",
         f"{server.url}/api/v1/openapi.json", "-H", f"Authorization: Bearer {server.admin}",
         "--checks", "all", "--max-examples", str(EXAMPLES), "--seed", "20261128", "--workers", "1",
         "--phases", "examples,fuzzing", "--exclude-method", "OPTIONS", "--no-color",
         "--generation-database", "none", "--output-truncate", "false"],
        capture_output=True, text=True, timeout=600, env=environment, cwd=server.storage.parent)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated", result.stdout)
    assert generated and int(generated.group(1)) > 200, result.stdout[-2000:]
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    SUMMARY["Schemathesis requests checked against the OpenAPI document"] += int(generated.group(1))
