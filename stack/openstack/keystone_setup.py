#!/usr/bin/env python3
"""Fill the test stack's Keystone after `keystone-manage bootstrap`: roles,
the service and demo projects, the neutron/octavia service users, the demo
user, and catalogue entries for Neutron and Octavia. Idempotent: what exists
is kept. Standard library only (runs under Debian's python3).

Environment: KEYSTONE_URL, PASSWORD, NEUTRON_URL, OCTAVIA_URL, REGION."""
import os

from osapi import admin_token as _admin_token
from osapi import call as _call

BASE = os.environ["KEYSTONE_URL"].rstrip("/") + "/v3"
PASSWORD = os.environ["PASSWORD"]
REGION = os.environ.get("REGION", "RegionOne")


def call(method, path, body=None, token=None):
    return _call(method, BASE + path, body, token)


def admin_token():
    return _admin_token(os.environ["KEYSTONE_URL"], PASSWORD)


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
