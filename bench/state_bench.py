"""Benchmarks of a box's state: pause + resume, snapshot, fork (one, and 100 in one call), on
each storage driver; with overlay, fork time against the size of the writable layer. Run by
bench.py against daemons of its own; prints Markdown.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import api_bench


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(pitbox, driver, rounds):
    work = tempfile.mkdtemp(prefix="pitbox-state-bench-")
    state = os.path.join(work, "state")
    args = ["--storage", driver]
    daemon = api_bench.Daemon(pitbox, state, args)
    out = {}
    try:
        api = api_bench.Api(daemon.port, daemon.key)
        box = api.call("POST", "/v1/sandboxes", {"image": "host"})["id"]
        api.call("POST", "/v1/sandboxes/%s/exec" % box,
                 {"shell": "mkdir -p /work && for i in $(seq 100); do echo $i > /work/f$i; done"})
        api.call("POST", "/v1/sandboxes/%s/sessions" % box, {"cmd": ["sleep", "3600"]})

        pause = []
        for _ in range(rounds):
            t, _ = timed(lambda: (api.call("POST", "/v1/sandboxes/%s/pause" % box),
                                  api.call("POST", "/v1/sandboxes/%s/resume" % box)))
            pause.append(t)
        out["pause + resume"] = pause

        snaps = []
        for i in range(rounds):
            t, snap = timed(lambda: api.call("POST", "/v1/sandboxes/%s/snapshots" % box, {}))
            snaps.append(t)
            api.call("DELETE", "/v1/snapshots/" + snap["id"])
        out["snapshot"] = snaps

        forks = []
        for _ in range(max(10, rounds // 4)):
            t, made = timed(lambda: api.call("POST", "/v1/sandboxes/%s/fork" % box, {}))
            forks.append(t)
            for c in made["items"]:
                api.call("DELETE", "/v1/sandboxes/" + c["id"])
        out["fork of one box"] = forks

        t, made = timed(lambda: api.call("POST", "/v1/sandboxes/%s/fork" % box, {"count": 100}))
        out["100 forks in one call"] = [t]
        for c in made["items"]:
            api.call("DELETE", "/v1/sandboxes/" + c["id"])

        if driver == "overlay":
            for mib in (1, 10, 100):
                api.call("POST", "/v1/sandboxes/%s/exec" % box,
                         {"shell": "rm -rf /big && mkdir /big && head -c %d /dev/urandom > "
                                   "/big/data" % (mib << 20)})
                times = []
                for _ in range(5):
                    t, made = timed(lambda: api.call("POST", "/v1/sandboxes/%s/fork" % box, {}))
                    times.append(t)
                    api.call("DELETE", "/v1/sandboxes/" + made["items"][0]["id"])
                out["fork, writable layer of %d MiB" % mib] = times
        api_bench.delete_all(api)
    finally:
        daemon.stop()
        pool = os.path.join(state, "pool")
        if os.path.ismount(pool):
            subprocess.run(["umount", "-l", pool])
        shutil.rmtree(work, ignore_errors=True)
    return out


def run(pitbox, rounds=100):
    results = {d: measure(pitbox, d, rounds) for d in ("overlay", "btrfs:4G")}
    ms = lambda s: s * 1e3
    lines = [
        "## Box state: pause, snapshot, fork",
        "",
        "A box of the `host` image with 100 small files written and a process running; every "
        "figure is a whole API call (HTTP included). btrfs: a 4 GiB pool in a loop file "
        "(`pitbox serve --storage btrfs:4G`).",
        "",
        "| measure | overlay p50 | overlay p95 | btrfs p50 | btrfs p95 |",
        "|---|---:|---:|---:|---:|",
    ]
    names = list(results["overlay"].keys())
    for name in names:
        o = results["overlay"][name]
        b = results["btrfs:4G"].get(name)
        row = "| %s (%d) | %.2f ms | %.2f ms | " % (name, len(o), ms(api_bench.pct(o, .5)),
                                                   ms(api_bench.pct(o, .95)))
        row += ("%.2f ms | %.2f ms |" % (ms(api_bench.pct(b, .5)), ms(api_bench.pct(b, .95)))
                if b else "– | – |")
        lines.append(row)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(run(sys.argv[1]))
