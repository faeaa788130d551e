"""The systemd unit passes `systemd-analyze verify` (no systemd runs here, so the unit is checked, not started)."""
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BINARY, ROOT

UNIT = ROOT / "packaging" / "casefiles.service"


def test_the_systemd_unit_verifies_and_is_hardened(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    text = UNIT.read_text()
    for option in ("ProtectSystem=strict", "ReadWritePaths=/var/lib/casefiles", "NoNewPrivileges=yes",
                   "PrivateTmp=yes", "--metrics-listen", "CapabilityBoundingSet=\n", "AmbientCapabilities=\n",
                   "LimitNICE=-10\n"):
        assert option in text
    # verify checks that ExecStart's binary exists: point it at the one under test.
    unit = tmp_path / "casefiles.service"
    unit.write_text(text.replace("/usr/local/bin/casefiles", str(BINARY)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "casefiles.service" in line and "Documentation" not in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr
