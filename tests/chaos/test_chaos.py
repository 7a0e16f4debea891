#!/usr/bin/python3
"""Chaos suite: the local cluster (scripts/cluster.sh, without Prometheus) under a
hostile-but-fair client, on loopback, bounded in load and time (issue 16).

One cluster for the three scenarios, in order:
  1. slow clients: 20 slowloris connections (the issue's reproduction, a header line
     every second), 16 body-less POSTs without Content-Length, and a flood of 60
     connections from one other address, while /healthz and predictions are timed;
  2. a burst of 16 concurrent 10 MB uploads while the gateway's RSS is sampled;
  3. kill -9 of inference under load: cluster.sh restarts it; failed requests,
     outage, and the lag between inference SERVING again and the gateway's first
     success again are measured;
  4. kill -9 of the registry under load: predictions go on without a failure, the
     models API answers again right after the registry is back;
  5. pixel and decompression bombs under load: 4 clients send a 49 Mpx PNG (160 KB)
     and a 49 Mpx JPEG without pause while normal predictions are timed against
     their idle latency;
  6. a corrupt version published to `production` under load: 0 failed requests, the
     old version kept, the failure counted;
  7. kill -9 of the trainer mid-job: the restarted trainer resumes the job from its
     checkpoint and publishes it once;
  8. kill -9 of the gateway itself under load: cluster.sh restarts it; the outage
     clients see and how fast predictions succeed again.
Each prints its figures ("CHAOS ..." lines, the source of docs/operations.md) and
asserts the issue's targets with margin for a noisy 2-core machine.

Environment: SKINLESION_BUILD_DIR (every binary built), SKINLESION_REPO.
"""
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))
from test_cluster_e2e import BUILD, Cluster, IMAGE, REPO, http, tiny_job, wait_for  # noqa: E402

HEADER_TIMEOUT_S = 3.0
PER_CLIENT = 32


def figure(name, **values):
    text = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"CHAOS {name} {text}", flush=True)


def pid_of(binary, port):
    """The pid of the running `binary` started with --port PORT (from /proc)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(binary.encode()) and b"--port" in args:
            i = args.index(b"--port")
            if i + 1 < len(args) and args[i + 1] == str(port).encode():
                return int(entry)
    return None


def rss_mb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


class Timer(threading.Thread):
    """Closed loop of one kind of request; records (start, seconds, status)."""

    def __init__(self, fn, pause):
        super().__init__(daemon=True)
        self.fn, self.pause = fn, pause
        self.samples = []
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            t = time.time()
            try:
                status = self.fn()
            except Exception as e:  # noqa: BLE001 - a failed request is a data point
                status = repr(e)[:60]
            self.samples.append((t, time.time() - t, status))
            self.stop_flag.wait(self.pause)

    def finish(self):
        self.stop_flag.set()
        self.join(60)
        return self.samples


def slowest(samples):
    return max((s for _, s, _ in samples), default=0.0)


def failures(samples):
    return [s for s in samples if s[2] != 200]


class ChaosSuite(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster()
        cls.cluster.env.update({
            "SKINLESION_PROMETHEUS": "0",
            "SKINLESION_GATEWAY_FLAGS": f"--header_timeout_ms={int(HEADER_TIMEOUT_S * 1000)} "
                                        f"--max_connections_per_client={PER_CLIENT} --rate_limit_rps=0",
        })
        try:
            cls.cluster.start()
        except Exception:
            print(cls.cluster.logs_tail(), file=sys.stderr)
            cls.cluster.stop()
            raise
        cls.base = cls.cluster.base
        cls.port = cls.cluster.ports["GATEWAY"]
        with open(IMAGE, "rb") as f:
            cls.image = f.read()

    @classmethod
    def tearDownClass(cls):
        code = cls.cluster.stop()
        if code != 0:
            print("".join(cls.cluster.out[-30:]) + cls.cluster.logs_tail(), file=sys.stderr)
        cls.cluster.tmp.cleanup()

    def healthz(self):
        return http("GET", self.base + "/healthz", timeout=60)[0]

    def predict(self):
        return http("POST", self.base + "/api/v1/predictions", self.image,
                    {"Content-Type": "image/jpeg"}, timeout=60)[0]

    def timers(self):
        health, predictions = Timer(self.healthz, 0.1), Timer(self.predict, 0.1)
        health.start()
        predictions.start()
        return health, predictions

    # ------------------------------------------------------------------ 1
    def test_1_slow_clients(self):
        health, predictions = self.timers()
        time.sleep(0.5)
        # The reproduction: 20 partial requests, one more header line each
        # second (every 5 s in the issue; faster here to fit the suite's time).
        t0 = time.time()
        slow = [socket.create_connection(("127.0.0.1", self.port)) for _ in range(20)]
        for c in slow:
            c.sendall(b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\n")
            c.settimeout(0.01)
        closed = {}
        next_line = t0 + 1.0
        while len(closed) < len(slow) and time.time() - t0 < HEADER_TIMEOUT_S + 5:
            time.sleep(0.1)
            send = time.time() >= next_line
            if send:
                next_line += 1.0
            for i, c in enumerate(slow):
                if i in closed:
                    continue
                try:
                    if send:
                        c.sendall(b"X-a: b\r\n")
                    data = c.recv(4096)
                    closed[i] = (time.time() - t0, data.split(b"\r\n")[0].decode(errors="replace"))
                except socket.timeout:
                    pass
                except OSError as e:
                    closed[i] = (time.time() - t0, type(e).__name__)
        for c in slow:
            c.close()
        slow_health, slow_predictions = list(health.samples), list(predictions.samples)
        answers = sorted({a for _, a in closed.values()})
        figure("slowloris", connections=20, closed_by_server=len(closed),
               last_closed_s=max((t for t, _ in closed.values()), default=-1.0),
               healthz_max_s=slowest(slow_health), healthz_n=len(slow_health),
               predict_max_s=slowest(slow_predictions), predict_n=len(slow_predictions),
               predict_failed=len(failures(slow_predictions)))
        self.assertEqual(len(closed), 20, f"closed by the server: {closed}")
        self.assertTrue(all(a.startswith("HTTP/1.1 408") for a in answers), answers)
        self.assertLess(max(t for t, _ in closed.values()), HEADER_TIMEOUT_S + 2.5)

        # 16 body-less POSTs without Content-Length: 411 at once.
        def lengthless(out):
            t = time.time()
            with socket.create_connection(("127.0.0.1", self.port)) as c:
                c.settimeout(10)
                c.sendall(b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\n\r\n")
                out.append((time.time() - t, c.recv(4096).split(b"\r\n")[0].decode()))
        answers = []
        threads = [threading.Thread(target=lengthless, args=(answers,)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        figure("lengthless_posts", n=16, answered_411=sum(a.startswith("HTTP/1.1 411") for _, a in answers),
               slowest_s=max((s for s, _ in answers), default=-1.0))
        self.assertEqual([a for _, a in answers], ["HTTP/1.1 411 Length Required"] * 16)
        self.assertLess(max(s for s, _ in answers), 1.5)

        # A flood from one other address: the per-address cap answers the excess 503
        # (or resets it) at once; everyone else is unaffected.
        flood, refused = [], 0
        for _ in range(60):
            c = socket.create_connection(("127.0.0.1", self.port), source_address=("127.0.0.2", 0))
            flood.append(c)
        time.sleep(0.5)
        for c in flood:
            c.settimeout(0.05)
            try:
                if c.recv(4096).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except socket.timeout:
                pass
            except OSError:
                refused += 1
        time.sleep(0.5)
        for c in flood:
            c.close()
        all_health, all_predictions = health.finish(), predictions.finish()
        figure("flood", connections=60, per_client_cap=PER_CLIENT, refused=refused,
               healthz_max_s=slowest(all_health), predict_max_s=slowest(all_predictions),
               predict_failed=len(failures(all_predictions)), predict_n=len(all_predictions))
        self.assertEqual(refused, 60 - PER_CLIENT)
        # Normal clients: /healthz within 1 s and predictions within 5 s throughout
        # (2-core machine shared with a build: margin), none failed.
        self.assertLess(slowest(all_health), 1.0)
        self.assertLess(slowest(all_predictions), 5.0)
        self.assertEqual(failures(all_predictions), [])
        self.assertEqual(failures(all_health), [])

    # ------------------------------------------------------------------ 2
    def test_2_upload_burst(self):
        pid = pid_of("skinlesion-gateway", self.port)
        self.assertIsNotNone(pid)
        before = rss_mb(pid)
        body = b"\xff\xd8\xff\xe0" + bytes(10_000_000 - 4)  # 10 MB, a JPEG signature
        statuses = []

        def upload():
            statuses.append(http("POST", self.base + "/api/v1/predictions", body,
                                 {"Content-Type": "image/jpeg"}, timeout=120)[0])
        samples = []
        done = threading.Event()

        def sample():
            while not done.is_set():
                samples.append(rss_mb(pid))
                time.sleep(0.02)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.time()
        threads = [threading.Thread(target=upload) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        elapsed = time.time() - t0
        time.sleep(1.0)
        done.set()
        sampler.join()
        after = rss_mb(pid)
        peak = max(rss_mb(pid, "VmHWM"), max(samples, default=0.0))
        counts = {s: statuses.count(s) for s in sorted(set(statuses), key=str)}
        figure("upload_burst", uploads=16, mb_each=10, seconds=elapsed, rss_before_mb=before,
               rss_peak_mb=peak, rss_after_1s_mb=after, statuses=counts)
        # Every upload answered: refused by the in-flight budget (503) or read and
        # judged by inference (400: not a decodable image).
        self.assertEqual(len(statuses), 16)
        self.assertTrue(set(statuses) <= {400, 503}, counts)
        self.assertGreater(counts.get(400, 0), 0)
        self.assertLess(peak, 300.0)   # The target.
        self.assertLess(after, 150.0)  # Memory goes back after the burst.

    # ------------------------------------------------------------------ 3
    def test_3_inference_kill(self):
        import grpc  # Debian's python3-grpcio (the system python)
        port = self.cluster.ports["INFERENCE"]

        def serving():
            # A fresh channel each time: no reconnect backoff delays the answer.
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                check = channel.unary_unary("/grpc.health.v1.Health/Check")
                try:
                    return check(b"", timeout=0.5) == b"\x08\x01"
                except grpc.RpcError:
                    return False
        self.assertTrue(serving())
        pid = pid_of("skinlesion-inference", port)
        self.assertIsNotNone(pid)
        clients = [Timer(self.predict, 0.05) for _ in range(4)]
        for c in clients:
            c.start()
        time.sleep(2.0)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        serving_at = None
        while time.time() - killed_at < 90:
            if serving():
                serving_at = time.time()
                break
            time.sleep(0.05)
        self.assertIsNotNone(serving_at, "inference did not come back:\n" + self.cluster.logs_tail())
        # Keep the load on until every client has succeeded a while after recovery.
        time.sleep(4.0)
        samples = sorted(s for c in clients for s in c.finish())
        after_kill = [s for s in samples if s[0] + s[1] > killed_at]
        failed = failures(after_kill)
        first_ok = min((t + d for t, d, st in after_kill if st == 200 and t > killed_at), default=None)
        self.assertIsNotNone(first_ok)
        figure("inference_kill", requests=len(after_kill), failed=len(failed),
               restart_to_serving_s=serving_at - killed_at, outage_s=first_ok - killed_at,
               serving_to_first_ok_s=first_ok - serving_at,
               failed_codes=sorted({str(s[2]) for s in failed}))
        self.assertTrue(any("restarted inference" in line for line in self.cluster.out),
                        "".join(self.cluster.out[-10:]))
        self.assertIsNotNone(pid_of("skinlesion-inference", port))
        # Within about a second of inference SERVING again the gateway answers (the
        # issue: 6 s; without the gateway's ChannelWatcher 0 to 4 s); margin for the
        # machine. No failures after that.
        self.assertLess(first_ok - serving_at, 2.0)
        self.assertEqual([s for s in failed if s[0] > serving_at + 2.0], [])
        self.assertTrue(all(s[2] in (503, 504) for s in failed), sorted({str(s[2]) for s in failed}))


    # ------------------------------------------------------------------ 4
    def test_4_registry_kill(self):
        """kill -9 of the registry under load: predictions go on (inference serves
        the model it has loaded), the models API is back right after the registry."""
        import grpc
        port = self.cluster.ports["REGISTRY"]

        def registry_up():
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                try:
                    channel.unary_unary("/skinlesion.v1.RegistryService/ListModels")(b"", timeout=0.5)
                    return True
                except grpc.RpcError:
                    return False

        def models():
            return http("GET", self.base + "/api/v1/models", timeout=30)[0]
        self.assertTrue(registry_up())
        pid = pid_of("skinlesion-registry", port)
        self.assertIsNotNone(pid)
        predictions = [Timer(self.predict, 0.05) for _ in range(2)]
        for c in predictions:
            c.start()
        time.sleep(1.0)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        up_at = None
        while time.time() - killed_at < 60:
            if registry_up():
                up_at = time.time()
                break
            time.sleep(0.05)
        self.assertIsNotNone(up_at, "registry did not come back:\n" + self.cluster.logs_tail())
        models_ok = None
        while time.time() - up_at < 10:
            if models() == 200:
                models_ok = time.time()
                break
            time.sleep(0.05)
        time.sleep(1.0)
        samples = [s for c in predictions for s in c.finish() if s[0] + s[1] > killed_at]
        figure("registry_kill", predictions=len(samples), predictions_failed=len(failures(samples)),
               restart_to_up_s=up_at - killed_at,
               up_to_models_ok_s=(models_ok - up_at) if models_ok else -1.0)
        self.assertTrue(any("restarted registry" in line for line in self.cluster.out))
        self.assertEqual(failures(samples), [])
        self.assertIsNotNone(models_ok)
        self.assertLess(models_ok - up_at, 2.0)


    # ------------------------------------------------------------------ 5
    def test_5_pixel_bombs(self):
        """49 Mpx images from 4 clients: the PNG is refused from its header (over the
        model's decode budget), the JPEG decodes at 1/8 scale on a request thread under
        the heavy-decode slot; normal predictions keep their latency (the issue's
        target: p50 within 2x of idle)."""
        from PIL import Image  # Debian's python3-pil (a dependency of python3-torchvision)
        side = 7000
        png = os.path.join(self.cluster.tmp.name, "bomb.png")
        jpg = os.path.join(self.cluster.tmp.name, "bomb.jpg")
        Image.new("RGB", (side, side), (200, 120, 90)).save(png, optimize=True)
        gradient = Image.linear_gradient("L").resize((side, side))
        Image.merge("RGB", (gradient, gradient.rotate(90), gradient.rotate(45))).save(jpg, quality=90)
        with open(png, "rb") as f:
            png_bytes = f.read()
        with open(jpg, "rb") as f:
            jpg_bytes = f.read()

        def latencies(n):
            out = []
            for _ in range(n):
                t = time.time()
                self.assertEqual(self.predict(), 200)
                out.append(time.time() - t)
            return out
        latencies(5)  # Warm.
        idle = latencies(30)

        answers = {"png": [], "jpg": []}

        def bomber(kind, body, ctype):
            def send():
                t = time.time()
                status, body_json, _ = http("POST", self.base + "/api/v1/predictions", body,
                                            {"Content-Type": ctype}, timeout=60)
                answers[kind].append((status, time.time() - t, body_json))
                return status
            return send

        def under(kind, body, ctype):
            """p50 of 30 normal predictions while 4 clients send `body`, each as fast as
            the gateway's default per-client rate limit lets one client (20/s: a
            request, its answer, 50 ms)."""
            bombers = [Timer(bomber(kind, body, ctype), 0.05) for _ in range(4)]
            for b in bombers:
                b.start()
            time.sleep(1.0)
            loaded = latencies(30)
            for b in bombers:
                b.finish()
            return statistics.median(loaded), max(loaded)
        p50_idle = statistics.median(idle)
        p50_png, max_png = under("png", png_bytes, "image/png")
        p50_jpg, max_jpg = under("jpg", jpg_bytes, "image/jpeg")
        png_codes = sorted({a[0] for a in answers["png"]})
        jpg_codes = {c: [a[0] for a in answers["jpg"]].count(c) for c in sorted({a[0] for a in answers["jpg"]})}
        figure("pixel_bombs", png_bytes=len(png_bytes), jpg_bytes=len(jpg_bytes), megapixels=side * side / 1e6,
               p50_idle_s=p50_idle, p50_png_s=p50_png, ratio_png=p50_png / p50_idle, max_png_s=max_png,
               png_sent=len(answers["png"]), png_codes=png_codes,
               png_p50_s=statistics.median(a[1] for a in answers["png"]),
               p50_jpg_s=p50_jpg, ratio_jpg=p50_jpg / p50_idle, max_jpg_s=max_jpg,
               jpg_sent=len(answers["jpg"]), jpg_codes=jpg_codes,
               jpg_p50_s=statistics.median(a[1] for a in answers["jpg"]))
        # The PNG: refused from its header, fast, saying why.
        self.assertEqual(png_codes, [400])
        self.assertIn("decode budget", answers["png"][0][2]["message"])
        # The JPEG: answered (200), or refused while the heavy-decode slots are full (503).
        self.assertTrue(set(jpg_codes) <= {200, 503}, jpg_codes)
        self.assertGreater(jpg_codes.get(200, 0), 0)
        # The four bombers share one address: one heavy decode per client at a time,
        # the others are refused at once instead of taking every slot.
        self.assertGreater(jpg_codes.get(503, 0), 0)
        # Normal requests under 4 PNG-bomb clients: the target, p50 within 2x
        # of idle (before: 0.04 s -> 4.1 s). JPEG bombs cost a real decode each (1/8
        # scale, off the batch worker): within 3x.
        self.assertLess(p50_png, 2.0 * p50_idle)
        self.assertLess(p50_jpg, 3.0 * p50_idle)

    # ------------------------------------------------------------------ 6
    def test_6_corrupt_publish_under_load(self):
        """A version whose weights are corrupt (checksums fine: the bytes published are
        the bytes served) is moved to production under load: inference refuses it at
        its golden-set check, keeps serving the old version, counts the failure."""
        model = "ham10000"

        def served_version():
            _, models, _ = http("GET", self.base + "/api/v1/models", timeout=30)
            m = next(m for m in models["models"] if m["name"] == model)
            return (m["serving"] or {}).get("version"), m["aliases"].get("production")

        def reload_failures():
            url = f"http://127.0.0.1:{self.cluster.ports['INFERENCE_METRICS']}/metrics"
            with urllib.request.urlopen(url, timeout=10) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("skinlesion_model_reloads_total") and \
                            f'model="{model}"' in line and 'result="failure"' in line:
                        return float(line.rsplit(" ", 1)[1])
            return None
        serving_before, production_before = served_version()
        self.assertEqual(serving_before, production_before)
        failures_before = reload_failures()
        self.assertIsNotNone(failures_before, "the failure counter exists at zero before any failure")

        corrupt = os.path.join(self.cluster.tmp.name, "corrupt-model")
        shutil.copytree(os.path.join(REPO, "models", "bundled"), corrupt)
        weights = os.path.join(corrupt, "model.safetensors")
        size = os.path.getsize(weights)
        with open(weights, "r+b") as f:  # Overwrite 64 KiB in the middle of the tensors.
            f.seek(size // 2)
            f.write(b"\x7f" * 65536)

        clients = [Timer(self.predict, 0.05) for _ in range(4)]
        for c in clients:
            c.start()
        time.sleep(1.0)
        published_at = time.time()
        out = subprocess.run([os.path.join(BUILD, "tools", "skinlesion"), "publish", "--model", corrupt,
                              "--registry", os.path.join(self.cluster.state, "registry"),
                              "--name", model, "--alias", "production"],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        _, production = served_version()
        self.assertNotEqual(production, production_before)
        wait_for(lambda: (reload_failures() or 0) > failures_before, 60,
                 "inference to refuse the corrupt version")
        refused_after_s = time.time() - published_at
        time.sleep(2.0)
        samples = [s for c in clients for s in c.finish()]
        serving_after, _ = served_version()
        figure("corrupt_publish", requests=len(samples), failed=len(failures(samples)),
               refused_after_s=refused_after_s, serving_before=serving_before,
               serving_after=serving_after, corrupt_version=production)
        self.assertEqual(failures(samples), [])
        self.assertEqual(serving_after, serving_before)
        # Put production back, as an operator would, for the tests after this one.
        token = {"Authorization": "Bearer " + self.cluster.env["SKINLESION_TOKEN"]}
        status, body, _ = http("PUT", f"{self.base}/api/v1/models/{model}/aliases/production",
                               {"version": production_before, "reason": "chaos: roll back", "force": True},
                               token, timeout=30)
        self.assertEqual(status, 200, body)

    # ------------------------------------------------------------------ 7
    def test_7_trainer_kill_mid_job(self):
        """kill -9 of the trainer while a job trains: cluster.sh restarts it, the job
        is queued again and resumes from its last checkpoint, and it publishes exactly
        one version."""
        token = {"Authorization": "Bearer " + self.cluster.env["SKINLESION_TOKEN"]}
        port = self.cluster.ports["TRAINER"]

        def versions():
            _, models, _ = http("GET", self.base + "/api/v1/models", timeout=30)
            return [v["version"] for m in models["models"] if m["name"] == "ham10000"
                    for v in m["versions"]]
        before = versions()
        job = tiny_job(epochs=5)
        status, body, _ = http("POST", self.base + "/api/v1/jobs", job, token, timeout=30)
        self.assertEqual(status, 201, body)
        job_id = body["job_id"]

        def get_job():
            s, j, _ = http("GET", f"{self.base}/api/v1/jobs/{job_id}", timeout=30)
            return j if s == 200 else {}
        # Past the first epoch (its checkpoint written), before the last.
        started = time.time()
        wait_for(lambda: get_job().get("state") == "running" and get_job().get("epoch", 0) >= 2, 240,
                 "the job to reach epoch 2", interval=0.2)
        killed_epoch = get_job().get("epoch")
        pid = pid_of("skinlesion-trainer", port)
        self.assertIsNotNone(pid)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: (pid_of("skinlesion-trainer", port) or pid) != pid, 60, "the trainer to restart",
                 interval=0.1)
        restarted_s = time.time() - killed_at
        done = wait_for(lambda: (lambda j: j if j.get("state") in ("succeeded", "failed", "cancelled")
                                 else None)(get_job()), 300, "the job to finish", interval=1)
        after = versions()
        # The job's own log, as `skinlesion jobs watch` shows it (replayed for a
        # finished job).
        watch = subprocess.run([os.path.join(BUILD, "tools", "skinlesion"), "jobs", "watch",
                                "--trainer", f"127.0.0.1:{port}",
                                "--token_file", os.path.join(self.cluster.state, "token"), job_id],
                               capture_output=True, text=True, timeout=60)
        lines = [line for line in watch.stdout.splitlines() if line.startswith("  | ")]
        resumed = [line for line in lines if "resuming from the last checkpoint" in line]
        figure("trainer_kill", killed_at_epoch=killed_epoch, epochs=job["epochs"],
               restart_s=restarted_s, job_total_s=time.time() - started,
               state=done["state"], published_version=done.get("published_version"),
               new_versions=len(after) - len(before), resumed_attempts=len(resumed))
        self.assertEqual(done["state"], "succeeded", done)
        self.assertTrue(any("restarted trainer" in line for line in self.cluster.out))
        self.assertTrue(any("trainer restarted: job re-queued" in line for line in lines), lines)
        self.assertEqual(len(resumed), 1, lines)
        self.assertEqual(len(after), len(before) + 1, (before, after))  # Published once.
        self.assertEqual(done["published_version"], max(after))

    # ------------------------------------------------------------------ 8
    def test_8_gateway_kill(self):
        """kill -9 of the gateway under 4 closed-loop clients: requests in flight and
        those sent while it is down fail (connection refused or reset: there is no one
        else to answer them locally; in Kubernetes another replica would), cluster.sh
        restarts it, and predictions succeed again as soon as it listens."""
        pid = pid_of("skinlesion-gateway", self.port)
        self.assertIsNotNone(pid)

        def predict_short():
            return http("POST", self.base + "/api/v1/predictions", self.image,
                        {"Content-Type": "image/jpeg"}, timeout=5)[0]
        clients = [Timer(predict_short, 0.05) for _ in range(4)]
        for c in clients:
            c.start()
        time.sleep(1.5)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        back = wait_for(lambda: (pid_of("skinlesion-gateway", self.port) or pid) != pid, 60,
                        "the gateway to restart", interval=0.05)
        self.assertTrue(back)
        restarted_at = time.time()
        wait_for(lambda: any(t > restarted_at and st == 200 for c in clients for t, _, st in c.samples),
                 30, "a prediction to succeed after the restart", interval=0.05)
        time.sleep(2.0)
        samples = sorted(s for c in clients for s in c.finish())
        after = [s for s in samples if s[0] + s[1] > killed_at]
        failed = failures(after)
        first_ok = min(t + d for t, d, st in after if st == 200 and t > killed_at)
        figure("gateway_kill", requests=len(after), failed=len(failed),
               restart_s=restarted_at - killed_at, outage_s=first_ok - killed_at,
               failed_kinds=sorted({str(s[2])[:30] for s in failed}))
        self.assertTrue(any("restarted gateway" in line for line in self.cluster.out))
        # Back within a few seconds of the kill (restart backoff 0.5 s + start), and
        # nothing fails once it is back.
        self.assertLess(first_ok - killed_at, 10.0)
        self.assertEqual([s for s in failed if s[0] > first_ok], [])
        self.assertEqual(self.healthz(), 200)


if __name__ == "__main__":
    unittest.main()
