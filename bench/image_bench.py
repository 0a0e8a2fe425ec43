"""Benchmarks of images: create-to-first-exec from a ten-layer image against a one-layer one,
a cached rebuild of a five-step Dockerfile, and (unless skipped) the Debian base image build.
Run by bench.py against its own daemon; prints Markdown.
"""

import os
import shutil
import sys
import tempfile
import time

import api_bench

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sdk",
                                "python"))
import pitbox  # noqa: E402  (the SDK of this tree, not an installed one)

# Nine RUN steps on busybox (one layer): ten layers, each with a file of its own.
TEN_LAYERS = "FROM busybox\n" + "".join(
    "RUN echo %d > /layer-%d && mkdir -p /usr/share/l%d && echo x > /usr/share/l%d/f\n" %
    (i, i, i, i) for i in range(1, 10))

# Five steps, two of them with the build context as input.
FIVE_STEPS = """FROM busybox
ARG GREETING=hello
ENV APP=/app
COPY . /app
RUN cat /app/data.txt > /app/copy.txt
WORKDIR /app
"""


def create_to_first_exec(api, image, rounds):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sb = api.call("POST", "/v1/sandboxes", {"image": image})
        r = api.call("POST", "/v1/sandboxes/%s/exec" % sb["id"], {"cmd": ["true"]})
        times.append(time.perf_counter() - t0)
        assert r["exit_code"] == 0, r
        api.call("DELETE", "/v1/sandboxes/" + sb["id"])
    return times


def run(pitbox_bin, rounds=200, rebuilds=20, base=True):
    work = tempfile.mkdtemp(prefix="pitbox-image-bench-")
    daemon = api_bench.Daemon(pitbox_bin, os.path.join(work, "state"))
    lines = []
    try:
        api = api_bench.Api(daemon.port, daemon.key)
        client = pitbox.Pitbox("http://127.0.0.1:%d" % daemon.port, daemon.key)

        ten = client.images.build(TEN_LAYERS, tags=["bench-ten"])
        layers = {"busybox": len(client.images.get("busybox").layers),
                  "bench-ten": len(ten.layers)}
        assert layers["bench-ten"] == 10, layers

        # Interleaved so that both see the same machine; the first rounds warm the caches.
        create_to_first_exec(api, "busybox", 20)
        create_to_first_exec(api, "bench-ten", 20)
        one, many = [], []
        for _ in range(rounds // 20):
            one += create_to_first_exec(api, "busybox", 20)
            many += create_to_first_exec(api, "bench-ten", 20)

        ctx = os.path.join(work, "ctx")
        os.makedirs(ctx)
        with open(os.path.join(ctx, "data.txt"), "w") as f:
            f.write("some input\n" * 1000)
        t0 = time.perf_counter()
        first = client.images.build(FIVE_STEPS, ctx, tags=["bench-five"])
        first_s = time.perf_counter() - t0
        cached = []
        for _ in range(rebuilds):
            t0 = time.perf_counter()
            again = client.images.build(FIVE_STEPS, ctx, tags=["bench-five"])
            cached.append(time.perf_counter() - t0)
            assert again.id == first.id, (again.id, first.id)

        base_line = []
        if base:
            t0 = time.perf_counter()
            img = client.images.build_base(rebuild=True)
            base_s = time.perf_counter() - t0
            base_line = ["| Debian base image build (mmdebstrap, bookworm minbase + tools): "
                         "time, compressed size | %.0f s, %.0f MiB |" % (base_s,
                                                                       img.size / 2**20)]

        ms = lambda s: s * 1e3
        p50_one, p50_many = api_bench.pct(one, .5), api_bench.pct(many, .5)
        lines += [
            "## Images",
            "",
            "The same daemon set-up as above; images made by the daemon's builder.",
            "",
            "| measure | result |",
            "|---|---:|",
            "| create to first exec, %d-layer image (busybox), p50 / p99 (%d rounds) | "
            "%.2f ms / %.2f ms |" % (layers["busybox"], len(one), ms(p50_one),
                                     ms(api_bench.pct(one, .99))),
            "| create to first exec, %d-layer image, p50 / p99 (%d rounds) | %.2f ms / %.2f ms |"
            % (layers["bench-ten"], len(many), ms(p50_many), ms(api_bench.pct(many, .99))),
            "| %d layers against 1, p50 | %+.1f %% |" % (layers["bench-ten"],
                                                        (p50_many / p50_one - 1) * 100),
            "| build of a 5-step Dockerfile (FROM, ARG, ENV, COPY, RUN, WORKDIR), first time "
            "| %.0f ms |" % ms(first_s),
            "| the same build again, every step cached, p50 / max (%d builds; API round trips, "
            "context upload and hashing included) | %.0f ms / %.0f ms |" % (
                rebuilds, ms(api_bench.pct(cached, .5)), ms(max(cached))),
        ] + base_line
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(run(sys.argv[1], base="--no-base" not in sys.argv))
