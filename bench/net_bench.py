"""Benchmarks of boxes' networks and preview links: create-to-first-exec with a network against
without one (serve --network off), and a small request and a large download through a preview
link against the same straight to the box's address. Run by bench.py against daemons of its own;
prints Markdown.
"""

import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time

import api_bench


def create_and_exec(pitbox, rounds):
    """Create-to-first-exec times of two daemons side by side, one without networks (serve
    --network off) and one with (egress), taking turns so that both see the same machine."""
    work = tempfile.mkdtemp(prefix="pitbox-net-bench-")
    daemons = {}
    times = {"off": [], "egress": []}
    try:
        for network in times:
            daemons[network] = api_bench.Daemon(pitbox, os.path.join(work, network),
                                                ["--pool", "0", "--network", network])
        apis = {n: api_bench.Api(d.port, d.key) for n, d in daemons.items()}
        time.sleep(1)  # the namespaces made ahead
        for _ in range(rounds):
            for network, api in apis.items():
                t0 = time.perf_counter()
                box = api.call("POST", "/v1/sandboxes", {"image": "busybox"})["id"]
                api.call("POST", "/v1/sandboxes/%s/exec" % box, {"cmd": ["true"]})
                times[network].append(time.perf_counter() - t0)
                api.call("DELETE", "/v1/sandboxes/" + box)
                time.sleep(0.02)  # let the pool refill, as between creates of an agent
    finally:
        for d in daemons.values():
            d.stop()
        shutil.rmtree(work, ignore_errors=True)
    return times["off"], times["egress"]


def get(port, path, headers, host="127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 200, (r.status, body[:200])
    return body


def proxy(pitbox, rounds):
    work = tempfile.mkdtemp(prefix="pitbox-net-bench-")
    daemon = api_bench.Daemon(pitbox, os.path.join(work, "state"), ["--pool", "0"])
    out = {}
    try:
        api = api_bench.Api(daemon.port, daemon.key)
        sb = api.call("POST", "/v1/sandboxes", {"image": "busybox"})
        box, address = sb["id"], sb["network"]["address"]
        api.call("POST", "/v1/sandboxes/%s/exec" % box, {
            "shell": "mkdir -p /tmp/www && echo small > /tmp/www/small && "
                     "dd if=/dev/zero of=/tmp/www/big bs=1M count=1024 2>/dev/null && "
                     "httpd -p 8000 -h /tmp/www"})
        token = api.call("POST", "/v1/sandboxes/%s/ports/8000/preview-url" % box, {})["token"]
        host = {"Host": "8000-%s.localhost:%d" % (box, daemon.port),
                "X-Pitbox-Preview-Token": token}
        # Straight to the box (the host may connect to it; boxes may not) and through the link,
        # by the same client code.
        def direct(path):
            get(8000, path, {}, host=address)

        for _ in range(10):
            direct("/small")
            get(daemon.port, "/small", host)
        d, p, k = [], [], []
        kept = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        for _ in range(rounds):
            t0 = time.perf_counter()
            direct("/small")
            d.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            get(daemon.port, "/small", host)
            p.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            kept.request("GET", "/small", headers=host)
            kept.getresponse().read()
            k.append(time.perf_counter() - t0)
        kept.close()
        out["small"] = (d, p, k)

        def curl(url, headers):
            args = ["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}"]
            for k, v in headers.items():
                args += ["-H", "%s: %s" % (k, v)]
            return float(subprocess.run(args + [url], capture_output=True, text=True,
                                        check=True).stdout)

        out["big"] = (max(curl("http://%s:8000/big" % address, {}) for _ in range(3)),
                      max(curl("http://127.0.0.1:%d/big" % daemon.port, host) for _ in range(3)))
        api.call("DELETE", "/v1/sandboxes/" + box)
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def run(pitbox, rounds=100):
    off, on = create_and_exec(pitbox, rounds)
    p = proxy(pitbox, rounds * 3)
    ms = lambda s: s * 1e3
    pct = api_bench.pct
    d, v, k = p["small"]
    big_direct, big_proxy = p["big"]
    lines = [
        "## Networks and preview links",
        "",
        "Create-to-first-exec of a `busybox` box through the API, with no warm pool (`--pool 0`), "
        "two daemons taking turns: with a network (`--network egress`: a namespace made ahead, its rules applied before "
        "start) against loopback only (`--network off`). Then a small file (6 bytes) and a 1 GiB "
        "one served by busybox httpd in a box: straight to the box's address from the host, and "
        "through its preview link (by host; the daemon opens a new connection to the app per request, "
        "like the straight path; the client's connection to the daemon is new each time, or kept "
        "as browsers keep it).",
        "",
        "| measure | p50 | p95 |",
        "|---|---:|---:|",
        "| create + exec, loopback only (%d) | %.2f ms | %.2f ms |" % (
            len(off), ms(pct(off, .5)), ms(pct(off, .95))),
        "| create + exec, with a network (%d) | %.2f ms | %.2f ms |" % (
            len(on), ms(pct(on, .5)), ms(pct(on, .95))),
        "| difference (target: at most 2 ms) | %.2f ms | |" % (ms(pct(on, .5) - pct(off, .5))),
        "| small GET, straight (%d) | %.3f ms | %.3f ms |" % (len(d), ms(pct(d, .5)), ms(pct(d, .95))),
        "| small GET, through the preview (%d) | %.3f ms | %.3f ms |" % (
            len(v), ms(pct(v, .5)), ms(pct(v, .95))),
        "| small GET, through the preview, the client's connection kept (%d) | %.3f ms | %.3f ms |" % (
            len(k), ms(pct(k, .5)), ms(pct(k, .95))),
        "| preview adds, new connections (target: at most 0.3 ms) | %.3f ms | |" % (
            ms(pct(v, .5) - pct(d, .5))),
        "| preview adds, kept connection as browsers do | %.3f ms | |" % (
            ms(pct(k, .5) - pct(d, .5))),
        "| 1 GiB download, straight | %.2f GB/s | |" % (big_direct / 1e9),
        "| 1 GiB download, through the preview (target: at least 1 GB/s) | %.2f GB/s | |" % (
            big_proxy / 1e9),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100))
