"""Minimal OpenStack REST calls for the stack's set-up scripts: JSON over
urllib, standard library only (they run under Debian's python3)."""
import json
import sys
import urllib.error
import urllib.request


def call(method, url, body=None, token=None, ok=(200, 201, 202, 204)):
    """(JSON body, headers) of `method url`; exits naming the call unless
    the status is in `ok`."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            status, headers = resp.status, resp.headers
    except urllib.error.HTTPError as err:
        raw, status, headers = err.read(), err.code, err.headers
    if status not in ok:
        sys.exit(f"{method} {url}: HTTP {status}: {raw[:300]!r}")
    return (json.loads(raw) if raw else {}), headers


def admin_token(keystone_url, password):
    """A token of user admin scoped to project admin."""
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    _, headers = call("POST", keystone_url.rstrip("/") + "/v3/auth/tokens", body)
    return headers["X-Subject-Token"]
