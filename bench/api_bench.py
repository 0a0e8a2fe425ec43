"""Benchmarks of the daemon through its HTTP API: create-to-first-exec, exec round trips,
creates per second with parallel clients, and 1,000 idle boxes (the daemon's memory and each
box's). Run by bench.py; prints Markdown.
"""

import http.client
import json
import os
import subprocess
import tempfile
import threading
import time


class Api:
    """A keep-alive connection to the daemon."""

    def __init__(self, port, key):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}

    def call(self, method, path, body=None):
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers=self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError("%s %s: %d %s" % (method, path, r.status, data[:300]))
        return json.loads(data) if data else None


class Daemon:
    def __init__(self, pitbox, state, args=()):
        self.log = os.path.join(state, "daemon.log")
        os.makedirs(state, exist_ok=True)
        env = dict(os.environ, PITBOX_STATE=state, PITBOX_CGROUP_PARENT="pitbox-bench")
        self.proc = subprocess.Popen([pitbox, "serve", "--listen", "127.0.0.1:0", "--quiet"] +
                                     list(args),
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"),
                                     env=env)
        deadline = time.time() + 30
        while time.time() < deadline:
            for line in open(self.log):
                msg = json.loads(line)
                if msg.get("msg") == "listening":
                    self.port = int(msg["address"].rsplit(":", 1)[1])
                    self.key = open(os.path.join(state, "keys", "admin.key")).read().strip()
                    return
            time.sleep(0.05)
        raise RuntimeError("the daemon did not start: " + open(self.log).read())

    def rss(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def delete_all(api):
    while True:
        items = api.call("GET", "/v1/sandboxes?limit=1000")["items"]
        if not items:
            return
        for sb in items:
            api.call("DELETE", "/v1/sandboxes/" + sb["id"])


def parallel(clients, total, daemon, work):
    """Runs work(api, i) for i in range(total) over `clients` threads; returns the seconds."""
    counter = iter(range(total))
    lock = threading.Lock()
    errors = []

    def run():
        api = Api(daemon.port, daemon.key)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                work(api, i)
            except Exception as e:  # reported after the run
                errors.append(e)
                return

    threads = [threading.Thread(target=run) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def run(pitbox, rounds=200, execs=2000, creates=600, idle=1000):
    work = tempfile.mkdtemp(prefix="pitbox-api-bench-")
    daemon = Daemon(pitbox, os.path.join(work, "state"))
    lines = []
    try:
        api = Api(daemon.port, daemon.key)
        # Warm-up: the built-in image is made on first use.
        sb = api.call("POST", "/v1/sandboxes", {})
        api.call("DELETE", "/v1/sandboxes/" + sb["id"])

        def create_to_first_exec(count, pause):
            times = []
            for _ in range(count):
                time.sleep(pause)
                t0 = time.perf_counter()
                sb = api.call("POST", "/v1/sandboxes", {"image": "host"})
                r = api.call("POST", "/v1/sandboxes/%s/exec" % sb["id"], {"cmd": ["true"]})
                times.append(time.perf_counter() - t0)
                assert r["exit_code"] == 0
                api.call("DELETE", "/v1/sandboxes/" + sb["id"])
            return times

        # Create to first exec, one after another; then with a pause between rounds, as an
        # agent's creates come: the pool of warm boxes (pitbox serve --pool, 4 by default) is
        # full again for each.
        first = create_to_first_exec(rounds, 0)
        first_warm = create_to_first_exec(rounds // 2, 0.15)

        # Exec round trips on one box over one keep-alive connection; a call that reaches the
        # box's init without starting a process (stat); and, for scale, /bin/true started on the
        # host by this process (posix_spawn + waitpid): the floor of any exec of `true`.
        sb = api.call("POST", "/v1/sandboxes", {"image": "host"})
        rtt, stat_rtt, spawn = [], [], []
        for _ in range(execs):
            t0 = time.perf_counter()
            api.call("POST", "/v1/sandboxes/%s/exec" % sb["id"], {"cmd": ["true"]})
            rtt.append(time.perf_counter() - t0)
        for _ in range(execs):
            t0 = time.perf_counter()
            api.call("GET", "/v1/sandboxes/%s/files/stat?path=/tmp" % sb["id"])
            stat_rtt.append(time.perf_counter() - t0)
        for _ in range(execs):
            t0 = time.perf_counter()
            os.waitpid(os.posix_spawn("/bin/true", ["true"], {}), 0)
            spawn.append(time.perf_counter() - t0)
        api.call("DELETE", "/v1/sandboxes/" + sb["id"])

        # Creates per second with parallel clients.
        clients = 8
        create_s = parallel(clients, creates, daemon,
                            lambda a, i: a.call("POST", "/v1/sandboxes", {"image": "host"}))
        ids = [s["id"] for s in api.call("GET", "/v1/sandboxes?limit=1000")["items"]]
        delete_s = parallel(clients, len(ids), daemon,
                            lambda a, i: a.call("DELETE", "/v1/sandboxes/" + ids[i]))

        # Many idle boxes.
        rss_before = daemon.rss()
        avail_before = mem_available()
        idle_s = parallel(clients, idle, daemon,
                          lambda a, i: a.call("POST", "/v1/sandboxes", {"image": "host"}))
        time.sleep(1)
        rss_after = daemon.rss()
        avail_after = mem_available()
        items = []
        cursor = None
        while True:
            page = api.call("GET", "/v1/sandboxes?limit=1000" + ("&cursor=" + cursor if cursor
                                                                  else ""))
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        metrics = daemon_metrics(daemon)
        cgroup_mem = [v for k, v in metrics.items() if k.startswith("pitbox_sandbox_memory_bytes")]
        started = sum(1 for s in items if s["state"] == "started")
        t0 = time.perf_counter()
        r = api.call("POST", "/v1/sandboxes/%s/exec" % items[len(items) // 2]["id"],
                     {"cmd": ["true"]})
        exec_among = time.perf_counter() - t0
        delete_all(api)

        ms = lambda s: s * 1e3
        lines += [
            "## Through the API (pitbox serve)",
            "",
            "One daemon, the `host` image, HTTP/1.1 keep-alive from Python clients on the same "
            "machine.",
            "",
            "| measure | result |",
            "|---|---:|",
            "| create to first exec, p50 (back to back, %d rounds) | %.2f ms |" % (rounds,
                                                                               ms(pct(first, .5))),
            "| create to first exec, p99 | %.2f ms |" % ms(pct(first, .99)),
            "| create to first exec from a full pool, p50 (%d rounds 150 ms apart) | %.2f ms |" % (
                rounds // 2, ms(pct(first_warm, .5))),
            "| create to first exec from a full pool, p99 | %.2f ms |" % ms(pct(first_warm, .99)),
            "| exec round trip of `true`, p50 (%d execs) | %.2f ms |" % (execs, ms(pct(rtt, .5))),
            "| exec round trip of `true`, p99 | %.2f ms |" % ms(pct(rtt, .99)),
            "| for scale: `/bin/true` spawned on the host, p50 | %.2f ms |" % ms(pct(spawn, .5)),
            "| files/stat round trip (API + box channel, no process), p50 | %.2f ms |" % ms(
                pct(stat_rtt, .5)),
            "| creates per second, %d parallel clients (%d creates) | %.0f /s |" % (
                clients, creates, creates / create_s),
            "| deletes per second, %d parallel clients | %.0f /s |" % (clients, len(ids) / delete_s),
            "| %d idle boxes: made in | %.1f s (%.0f /s) |" % (idle, idle_s, idle / idle_s),
            "| %d idle boxes: started | %d |" % (idle, started),
            "| daemon RSS before / with %d boxes | %.1f MiB / %.1f MiB |" % (
                idle, rss_before / 2**20, rss_after / 2**20),
            "| host memory per idle box (MemAvailable drop / %d) | %.0f KiB |" % (
                idle, (avail_before - avail_after) / idle / 1024),
            "| memory cgroup of an idle box, mean | %.0f KiB |" % (
                sum(cgroup_mem) / max(1, len(cgroup_mem)) / 1024),
            "| exec round trip with %d boxes running | %.2f ms |" % (idle, ms(exec_among)),
        ]
    finally:
        try:
            delete_all(Api(daemon.port, daemon.key))
        finally:
            daemon.stop()
            subprocess.run(["rm", "-rf", work])
    return "\n".join(lines) + "\n"


def daemon_metrics(daemon):
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
    conn.request("GET", "/metrics", headers={"Authorization": "Bearer " + daemon.key})
    text = conn.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


if __name__ == "__main__":
    import sys
    sys.stdout.write(run(sys.argv[1]))
