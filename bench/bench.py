"""Benchmarks of pitbox against bubblewrap and runc, timed with hyperfine in the same run.

Start-up: a one-shot box that runs /bin/true and is gone again, the same as `bwrap --unshare-all`
and `runc run` do it. Then the daemon through its HTTP API (api_bench.py), images
(image_bench.py) and a box's state: pause, snapshot, fork (state_bench.py). Results are reported
as mean, median, p95 and ratios; docs/benchmarks.md keeps the figures of a reference run.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import api_bench
import net_bench
import image_bench
import state_bench


def hyperfine(commands, runs, warmup, env=None):
    """Runs hyperfine on {name: command}; returns {name: [seconds...]}."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        argv = ["hyperfine", "-N", "--style", "none", "--warmup", str(warmup), "--runs", str(runs),
                "--export-json", out.name]
        for name, cmd in commands.items():
            argv += ["-n", name, cmd]
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
        data = json.load(open(out.name))
    return {r["command"]: r["times"] for r in data["results"]}


def stats(times):
    t = sorted(times)
    n = len(t)
    return {"mean": sum(t) / n * 1e3, "p50": t[n // 2] * 1e3, "p95": t[min(n - 1, int(n * 0.95))] * 1e3}


def runc_bundle(where):
    """A runc bundle running /bin/true with the host's /usr, like pitbox's host image."""
    rootfs = os.path.join(where, "rootfs")
    for d in ("usr", "proc", "dev", "tmp"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"),
                         ("sbin", "usr/sbin")):
        os.symlink(target, os.path.join(rootfs, link))
    subprocess.run(["runc", "spec"], cwd=where, check=True)
    path = os.path.join(where, "config.json")
    config = json.load(open(path))
    config["process"]["args"] = ["/bin/true"]
    config["process"]["terminal"] = False
    config["root"] = {"path": "rootfs", "readonly": True}
    config["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr",
                             "options": ["rbind", "ro"]})
    json.dump(config, open(path, "w"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pitbox", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--no-base", action="store_true",
                    help="do not time the Debian base image build (about 90 s)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="pitbox-bench-")
    state = os.path.join(work, "state")
    env = dict(os.environ, PITBOX_STATE=state)
    try:
        # The built-in images are made on first use: not part of what is measured.
        subprocess.run([args.pitbox, "run", "--image", "host", "--", "true"], env=env, check=True)
        subprocess.run([args.pitbox, "run", "--image", "busybox", "--", "true"], env=env,
                       check=True)
        runc_bundle(os.path.join(work, "runc"))
        bwrap = ("bwrap --unshare-all --ro-bind /usr /usr --symlink usr/lib /lib "
                 "--symlink usr/lib64 /lib64 --symlink usr/bin /bin --proc /proc --dev /dev "
                 "/bin/true")
        startup = {
            "pitbox run --image host": "%s run --image host -- /bin/true" % args.pitbox,
            "pitbox run --image busybox": "%s run --image busybox -- /bin/true" % args.pitbox,
            "bwrap --unshare-all": bwrap,
            "runc run": "runc run --bundle %s pitbox-bench" % os.path.join(work, "runc"),
            "plain fork+exec": "/bin/true",
        }
        results = hyperfine(startup, args.runs, 20, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    s = {name: stats(t) for name, t in results.items()}
    base = s["bwrap --unshare-all"]["mean"]
    lines = [
        "## Start-up: a box that runs /bin/true and is gone",
        "",
        "%s, %s, %d CPUs; %d runs each (hyperfine, after 20 warm-up runs)." % (
            platform.node(), platform.release(), os.cpu_count(), args.runs),
        "",
        "| command | mean ms | p50 ms | p95 ms | vs bwrap |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in startup:
        r = s[name]
        lines.append("| %s | %.2f | %.2f | %.2f | %.2fx |" % (name, r["mean"], r["p50"], r["p95"],
                                                              r["mean"] / base))
    report = "\n".join(lines) + "\n\n" + api_bench.run(args.pitbox)
    report += "\n" + image_bench.run(args.pitbox, base=not args.no_base)
    report += "\n" + state_bench.run(args.pitbox)
    report += "\n" + net_bench.run(args.pitbox)
    with open(args.report, "w") as f:
        f.write(report)
    sys.stdout.write(report)


if __name__ == "__main__":
    main()
