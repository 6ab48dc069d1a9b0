#!/usr/bin/env python3
"""Fill the test stack's Keystone after `keystone-manage bootstrap`: roles,
the service and demo projects, the neutron/octavia service users, the demo
user, and catalogue entries for Neutron and Octavia. Idempotent: what exists
is kept. Standard library only (runs under Debian's python3).

Environment: KEYSTONE_URL, PASSWORD, NEUTRON_URL, OCTAVIA_URL, REGION."""
import json
import os
import sys
import urllib.error
import urllib.request

BASE = os.environ["KEYSTONE_URL"].rstrip("/") + "/v3"
PASSWORD = os.environ["PASSWORD"]
REGION = os.environ.get("REGION", "RegionOne")


def call(method, path, body=None, token=None, ok=(200, 201, 204)):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method)
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
        sys.exit(f"keystone_setup: {method} {path}: HTTP {status}: {raw[:300]!r}")
    return (json.loads(raw) if raw else {}), headers


def admin_token():
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    _, headers = call("POST", "/auth/tokens", body)
    return headers["X-Subject-Token"]


class Keystone:
    def __init__(self, token):
        self.token = token

    def ensure(self, kind, collection, name, attrs=None):
        """Id of the `kind` called `name`, created with `attrs` if missing."""
        found, _ = call("GET", f"/{collection}?name={name}", token=self.token)
        if found.get(collection):
            return found[collection][0]["id"]
        created, _ = call("POST", f"/{collection}", {kind: dict(name=name, **(attrs or {}))},
                          token=self.token)
        return created[kind]["id"]

    def grant(self, project, user, role):
        call("PUT", f"/projects/{project}/users/{user}/roles/{role}", token=self.token)

    def endpoints(self, service_type, name, url):
        service = self.ensure("service", "services", name, {"type": service_type})
        have, _ = call("GET", f"/endpoints?service_id={service}", token=self.token)
        present = {e["interface"] for e in have.get("endpoints", [])}
        for interface in ("public", "internal", "admin"):
            if interface not in present:
                call("POST", "/endpoints", {"endpoint": {
                    "service_id": service, "interface": interface, "url": url,
                    "region_id": REGION}}, token=self.token)


def main():
    ks = Keystone(admin_token())
    roles = {r: ks.ensure("role", "roles", r)
             for r in ("admin", "member", "reader", "service", "load-balancer_member")}
    default = {"domain_id": "default"}
    service = ks.ensure("project", "projects", "service", default)
    demo = ks.ensure("project", "projects", "demo", default)
    for name in ("neutron", "octavia"):
        user = ks.ensure("user", "users", name, dict(default, password=PASSWORD))
        ks.grant(service, user, roles["admin"])
        ks.grant(service, user, roles["service"])
    user = ks.ensure("user", "users", "demo", dict(default, password=PASSWORD))
    ks.grant(demo, user, roles["member"])
    ks.grant(demo, user, roles["load-balancer_member"])
    ks.endpoints("network", "neutron", os.environ["NEUTRON_URL"])
    ks.endpoints("load-balancer", "octavia", os.environ["OCTAVIA_URL"])
    print("keystone_setup: projects, users, roles and catalogue ready")


if __name__ == "__main__":
    main()
