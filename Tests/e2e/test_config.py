"""End-to-end: the configuration file, environment variables and flags (`casefiles config check`, `serve`)."""
import os
import subprocess
import time

import requests

from conftest import BINARY, free_port
from helpers import auth, metadata


def config_check(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CASEFILES_")}
    environment.update(env or {})
    return subprocess.run([str(BINARY), "config", "check", *args], capture_output=True, text=True,
                          timeout=30, env=environment, cwd=cwd)


def settings(output: str) -> dict:
    """`config check`'s lines → {name: (value, source)}."""
    table = {}
    for line in output.splitlines():
        name, value, source = line.split(None, 2)
        table[name] = (value, source)
    return table


def test_flag_beats_environment_beats_file_beats_default(tmp_path):
    config = tmp_path / "casefiles.yaml"
    config.write_text("port: 9100\nmin-free-space: 7\nmax-upload-size: 5000\nupload-expiry: 2d\n"
                      "trusted-proxy:\n  - 10.0.0.0/8\n  - ::1\n")
    result = config_check("--config", str(config), "--port", "9300",
                          env={"CASEFILES_PORT": "9200", "CASEFILES_MIN_FREE_SPACE": "8"})
    assert result.returncode == 0, result.stderr
    table = settings(result.stdout)
    assert table["port"] == ("9300", "flag --port")                          # flag > env > file
    assert table["min-free-space"] == ("8", "env CASEFILES_MIN_FREE_SPACE")  # env > file
    assert table["max-upload-size"] == ("5000", f"file {config}")           # file > default
    assert table["upload-expiry"] == ("2d", f"file {config}")
    assert table["trusted-proxy"] == ("10.0.0.0/8,::1", f"file {config}")
    assert table["host"] == ("127.0.0.1", "default")
    assert table["max-link-lifetime"] == ("5m", "default")
    # Without the flag, the environment beats the file for the same key; CASEFILES_CONFIG names the file.
    result = config_check(env={"CASEFILES_CONFIG": str(config), "CASEFILES_PORT": "9200"})
    assert result.returncode == 0, result.stderr
    table = settings(result.stdout)
    assert table["port"] == ("9200", "env CASEFILES_PORT")
    assert table["min-free-space"] == ("7", f"file {config}")


def test_an_unknown_key_in_the_file_fails_naming_it(tmp_path):
    config = tmp_path / "casefiles.yaml"
    config.write_text("port: 9100\nmax-uplod-size: 5000\n")
    result = config_check("--config", str(config))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"configuration file {config} line 2: unknown key 'max-uplod-size'" in result.stderr


def test_a_bad_value_fails_naming_the_key_and_what_it_expects(tmp_path):
    config = tmp_path / "casefiles.yaml"
    config.write_text("idle-timeout: soon\n")
    result = config_check("--config", str(config))
    assert result.returncode == 1
    assert (f"idle-timeout (file {config}): expected a positive number of seconds, or with a suffix: "
            "90s, 30m, 12h, 7d, got 'soon'") in result.stderr
    result = config_check(env={"CASEFILES_MAX_UPLOAD_SIZE": "12GB"})
    assert result.returncode == 1
    assert ("max-upload-size (env CASEFILES_MAX_UPLOAD_SIZE): expected a number of bytes, 1 or more, got '12GB'"
            in result.stderr)
    result = config_check("--trusted-proxy", "10.0.0.0/33")
    assert result.returncode == 1
    assert "trusted-proxy (flag --trusted-proxy): expected IP addresses or CIDR ranges" in result.stderr


def test_serve_runs_with_the_files_values(tmp_path):
    """`serve --config FILE` listens on the file's port, stores under the file's storage root and applies its
    upload limit: OPTIONS announces it and a larger upload is refused."""
    storage = tmp_path / "Storage"
    port = free_port()
    config = tmp_path / "casefiles.yaml"
    config.write_text(f"port: {port}\nstorage: {storage}\nmin-free-space: 0\nmax-upload-size: 1000\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CASEFILES_")}
    environment["CASEFILES_CONFIG"] = str(config)

    def cli(*args):
        return subprocess.run([str(BINARY), *args, "--storage", str(storage)], check=True, capture_output=True,
                              text=True, timeout=60).stdout.strip()
    token = cli("users", "create", "carol", "--role", "customer", "--account", "ACME")
    case = cli("cases", "create", "--account", "ACME", "--subject", "Config", "--number", "1413")
    process = subprocess.Popen([str(BINARY), "serve"], env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "serve did not listen on the file's port"
                time.sleep(0.05)
        options = requests.options(f"{url}/api/v1/cases/{case}/uploads", headers=auth(token), timeout=10)
        assert options.headers["Tus-Max-Size"] == "1000"
        headers = {**auth(token), "Upload-Length": "1001", "Upload-Metadata": metadata("big.log")}
        refused = requests.post(f"{url}/api/v1/cases/{case}/uploads", headers=headers, timeout=10)
        assert refused.status_code == 413
        assert refused.json()["error"] == "upload_too_large"
        headers["Upload-Length"] = "1000"
        assert requests.post(f"{url}/api/v1/cases/{case}/uploads", headers=headers, timeout=10).status_code == 201
    finally:
        process.terminate()
        process.wait(timeout=20)
