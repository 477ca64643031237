"""`ledgerflow connect quickbooks-online`: the real command, a browser played by httpx."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse

import httpx
import yaml
from cryptography.fernet import Fernet

from connectors.oauth import TokenStore
from runner.store import open_store
from runner.store.tokens import TokenRows
from tests.standins.qbo import QboStandin
from tests.support.servers import free_port, serve_app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_connect_stores_encrypted_tokens_and_realm(project_dir, tmp_path):
    standin = QboStandin()
    port = free_port()
    key = Fernet.generate_key().decode()
    store_url = f"sqlite:///{tmp_path / 'connect.db'}"
    with serve_app(standin.app()) as srv:
        path = project_dir / "ledgerflow.yaml"
        data = yaml.safe_load(path.read_text())
        data["connections"]["quickbooks_online"].update(
            token_url=srv.url + "/oauth2/v1/tokens/bearer", authorize_url="https://appcenter.example/connect/oauth2",
            redirect_uri=f"http://localhost:{port}/callback")
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        env = {**os.environ, "LEDGERFLOW_TOKEN_KEY": key, "LEDGERFLOW_STORE_URL": store_url,
               "QBO_CLIENT_ID": standin.authority.client_id, "QBO_CLIENT_SECRET": standin.authority.client_secret,
               "PYTHONPATH": ROOT}
        proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "--project", str(path), "connect",
                                 "quickbooks-online", "--timeout", "30"], cwd=project_dir, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        url = None
        for line in proc.stdout:
            if "appcenter.example" in line:
                url = line.strip()
                break
        assert url, proc.stderr.read()
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        assert q["scope"] == ["com.intuit.quickbooks.accounting"] and q["response_type"] == ["code"]
        code = standin.authority.issue_code(q["redirect_uri"][0])
        r = httpx.get(q["redirect_uri"][0], params={"code": code, "state": q["state"][0], "realmId": "4620816365"})
        assert r.status_code == 200
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "connected quickbooks_online (quickbooks-online): realm_id=4620816365" in out
    os.environ["LEDGERFLOW_TOKEN_KEY"] = key
    try:
        ts, version = TokenStore(TokenRows(open_store(store_url))).read("quickbooks_online")
    finally:
        del os.environ["LEDGERFLOW_TOKEN_KEY"]
    assert ts.extra == {"realm_id": "4620816365"} and standin.authority.valid_access(ts.access_token)
    assert ts.access_token not in out + err


def test_connect_without_token_key_says_so(project_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LEDGERFLOW_TOKEN_KEY"}
    env.update(QBO_CLIENT_ID="x", QBO_CLIENT_SECRET="y", PYTHONPATH=ROOT,
               LEDGERFLOW_STORE_URL=f"sqlite:///{tmp_path / 'c.db'}")
    r = subprocess.run([sys.executable, "-m", "runner.cli", "connect", "quickbooks-online", "--timeout", "1"],
                       cwd=project_dir, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "LEDGERFLOW_TOKEN_KEY is not set" in r.stderr
