#!/usr/bin/env python3
"""The tenant-records contract (docs/workload.md) on etcd, in Python's standard library.

One shim runs next to each etcd member and talks only to that member, through etcd's JSON
gateway (/v3/kv/...), so a shim shares its member's fate in a partition.

    shim.py serve --listen IP:PORT --etcd http://IP:2379 --node NODE
    shim.py role http://IP:2379          prints `leader` or `follower` (the lab's role probe)

How the contract maps onto etcd:
- a tenant is the key t/<tenant>/meta; PUT creates it in a transaction (201, or 200 if there);
- a record is the key t/<tenant>/id/<idempotency key>, written in one transaction that also
  checks the tenant exists and the key does not; its seq is the etcd revision of that write:
  positive, assigned once, strictly increasing in commit order (gaps allowed by the contract);
- a retry finds the key already there and answers duplicate: true with the first write's seq;
- reads are etcd's default linearizable ranges, sorted by revision, from_seq as min revision.
"""

import argparse
import base64
import json
import re
import socket
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_BODY = 512 * 1024
# Shorter than the load's request timeout (3 s), so the shim answers 504 before the client
# gives up, and long enough for a commit on a busy machine.
ETCD_TIMEOUT_S = 2.5


class EtcdError(Exception):
    """etcd answered, or could not be reached; `maybe_stored` says whether a write may be in."""

    def __init__(self, message, maybe_stored):
        super().__init__(message)
        self.maybe_stored = maybe_stored


def b64(text):
    return base64.b64encode(text.encode()).decode()


def prefix_end(prefix):
    """The range end that covers every key starting with `prefix` (its last byte + 1)."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def etcd(base, path, body):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=ETCD_TIMEOUT_S) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        # A member without a leader refuses before proposing anything.
        raise EtcdError(f"etcd answered {error.code}: {text.strip()}", "no leader" not in text)
    except urllib.error.URLError as error:
        refused = isinstance(error.reason, ConnectionRefusedError)
        raise EtcdError(f"etcd unreachable: {error.reason}", not refused)
    except (socket.timeout, TimeoutError) as error:
        raise EtcdError(f"etcd did not answer in {ETCD_TIMEOUT_S} s: {error}", True)
    except (ConnectionError, OSError) as error:
        raise EtcdError(f"etcd connection failed: {error}", True)


class Shim(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    etcd_url = ""
    node = ""

    def log_message(self, *args):
        pass

    def answer(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("X-Served-By", self.node)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def route(self):
        """(tenant, rest) for /v1/tenants/<tenant>[/records], after the header checks."""
        url = urlsplit(self.path)
        parts = url.path.split("/")
        if len(parts) < 4 or parts[1] != "v1" or parts[2] != "tenants" or len(parts) > 5:
            return None, None, url
        rest = parts[4] if len(parts) == 5 else ""
        if rest not in ("", "records"):
            return None, None, url
        return parts[3], rest, url

    def tenant_or_refuse(self, tenant):
        if not TENANT.match(tenant):
            self.answer(400, {"error": f"bad tenant id `{tenant}`", "stored": "no"})
            return False
        header = self.headers.get("X-Tenant-Id")
        if header is None:
            self.answer(400, {"error": "X-Tenant-Id is missing", "stored": "no"})
            return False
        if header != tenant:
            self.answer(400, {"error": "X-Tenant-Id differs from the path", "stored": "no"})
            return False
        return True

    def do_GET(self):
        if self.path == "/healthz":
            try:
                etcd(self.etcd_url, "/v3/kv/range", {"key": b64("healthz")})
                self.answer(200, {"status": "ok", "node": self.node})
            except EtcdError as error:
                self.answer(503, {"status": str(error), "node": self.node})
            return
        tenant, rest, url = self.route()
        if tenant is None or rest != "records":
            self.answer(404, {"error": "no such route"})
            return
        if not self.tenant_or_refuse(tenant):
            return
        query = parse_qs(url.query)
        try:
            from_seq = max(1, int(query.get("from_seq", ["1"])[0]))
            limit = min(1000, max(1, int(query.get("limit", ["100"])[0])))
        except ValueError:
            self.answer(400, {"error": "from_seq and limit are numbers"})
            return
        prefix = f"t/{tenant}/id/"
        try:
            result = etcd(
                self.etcd_url,
                "/v3/kv/range",
                {
                    "key": b64(prefix),
                    "range_end": prefix_end(prefix),
                    "sort_order": "ASCEND",
                    "sort_target": "MOD",
                    "min_mod_revision": str(from_seq),
                    "limit": str(limit),
                    "keys_only": True,
                },
            )
        except EtcdError as error:
            self.answer(503, {"error": str(error)})
            return
        records = [
            {
                "seq": int(kv["mod_revision"]),
                "id": base64.b64decode(kv["key"]).decode()[len(prefix):],
            }
            for kv in result.get("kvs", [])
        ]
        self.answer(
            200,
            {
                "tenant": tenant,
                "records": records,
                "next_seq": records[-1]["seq"] + 1 if records else from_seq,
                "more": bool(result.get("more", False)),
            },
        )

    def do_PUT(self):
        self.read_body()
        tenant, rest, _ = self.route()
        if tenant is None or rest != "":
            self.answer(404, {"error": "no such route"})
            return
        if not self.tenant_or_refuse(tenant):
            return
        meta = b64(f"t/{tenant}/meta")
        try:
            result = etcd(
                self.etcd_url,
                "/v3/kv/txn",
                {
                    "compare": [
                        {"key": meta, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
                    ],
                    "success": [{"request_put": {"key": meta, "value": b64("1")}}],
                },
            )
        except EtcdError as error:
            self.answer(503, {"error": str(error), "stored": "no"})
            return
        created = result.get("succeeded", False)
        self.answer(201 if created else 200, {"tenant": tenant, "created": created})

    def do_DELETE(self):
        tenant, rest, _ = self.route()
        if tenant is None or rest != "":
            self.answer(404, {"error": "no such route"})
            return
        if not self.tenant_or_refuse(tenant):
            return
        prefix = f"t/{tenant}/"
        try:
            etcd(
                self.etcd_url,
                "/v3/kv/deleterange",
                {"key": b64(prefix), "range_end": prefix_end(prefix)},
            )
        except EtcdError as error:
            self.answer(503, {"error": str(error)})
            return
        self.answer(204)

    def do_POST(self):
        body = self.read_body()
        tenant, rest, _ = self.route()
        if tenant is None or rest != "records":
            self.answer(404, {"error": "no such route", "stored": "no"})
            return
        if not self.tenant_or_refuse(tenant):
            return
        record_id = self.headers.get("Idempotency-Key")
        if not record_id or len(record_id) > 256 or not all(33 <= ord(c) <= 126 for c in record_id):
            self.answer(400, {"error": "Idempotency-Key is missing or malformed", "stored": "no"})
            return
        if len(body) > MAX_BODY:
            self.answer(413, {"error": "payload above 512 KiB", "stored": "no"})
            return
        meta = b64(f"t/{tenant}/meta")
        key = b64(f"t/{tenant}/id/{record_id}")
        try:
            result = etcd(
                self.etcd_url,
                "/v3/kv/txn",
                {
                    "compare": [
                        {"key": meta, "target": "CREATE", "result": "GREATER", "create_revision": "0"},
                        {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"},
                    ],
                    "success": [
                        {"request_put": {"key": key, "value": base64.b64encode(body).decode()}}
                    ],
                    "failure": [{"request_range": {"key": key, "keys_only": True}}],
                },
            )
        except EtcdError as error:
            if error.maybe_stored:
                self.answer(504, {"error": str(error), "stored": "unknown"})
            else:
                self.answer(503, {"error": str(error), "stored": "no"})
            return
        if result.get("succeeded", False):
            seq, duplicate = int(result["header"]["revision"]), False
        else:
            found = result["responses"][0]["response_range"].get("kvs", [])
            if not found:
                self.answer(404, {"error": f"tenant `{tenant}` is not provisioned", "stored": "no"})
                return
            seq, duplicate = int(found[0]["create_revision"]), True
        self.answer(201, {"tenant": tenant, "id": record_id, "seq": seq, "duplicate": duplicate})


def role(etcd_url):
    status = etcd(etcd_url, "/v3/maintenance/status", {})
    leader = status.get("leader")
    print("leader" if leader and leader == status["header"]["member_id"] else "follower")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the contract for one etcd member")
    serve.add_argument("--listen", required=True, help="IP:PORT")
    serve.add_argument("--etcd", required=True, help="this member's client URL")
    serve.add_argument("--node", required=True, help="the lab node, for X-Served-By")
    probe = commands.add_parser("role", help="print leader or follower for one member")
    probe.add_argument("etcd", help="the member's client URL")
    args = parser.parse_args()
    if args.command == "role":
        try:
            role(args.etcd)
        except EtcdError as error:
            print(error, file=sys.stderr)
            sys.exit(1)
        return
    Shim.etcd_url = args.etcd.rstrip("/")
    Shim.node = args.node
    host, port = args.listen.rsplit(":", 1)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((host, int(port)), Shim).serve_forever()


if __name__ == "__main__":
    main()
