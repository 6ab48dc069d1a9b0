#!/usr/bin/env python3
"""The same port operations as the Rust bench, with openstacksdk (the library
behind the `openstack` CLI), for a side-by-side comparison in one run.

Usage: neutron_ports_sdk.py NETWORK_ID N BATCH   (credentials from OS_* env)
Prints one JSON line: {"sdk_single_create_s": .., "sdk_delete_s": .., "sdk_bulk_create_s": ..}"""
import json
import sys
import time

import openstack


def main():
    net, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    conn = openstack.connect()
    conn.network.get_network(net)  # authenticate outside the timed part
    out = {}
    t = time.monotonic()
    ports = [conn.network.create_port(network_id=net, name=f"sdk-{i}") for i in range(n)]
    out["sdk_single_create_s"] = time.monotonic() - t
    t = time.monotonic()
    for p in ports:
        conn.network.delete_port(p, ignore_missing=True)
    out["sdk_delete_s"] = time.monotonic() - t
    t = time.monotonic()
    made = []
    for start in range(0, n, batch):
        made += conn.network.create_ports(
            [{"network_id": net, "name": f"sdk-bulk-{i}"} for i in range(start, min(n, start + batch))])
    out["sdk_bulk_create_s"] = time.monotonic() - t
    for p in made:
        conn.network.delete_port(p, ignore_missing=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
