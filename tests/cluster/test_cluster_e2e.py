#!/usr/bin/python3
"""End-to-end test of the local cluster (scripts/cluster.sh), through its public faces.

Starts the whole cluster on free ports in a temporary state directory (registry
seeded with the bundled model, trainer, inference, gateway, a real Prometheus), then:
  1. a background client POSTs a fixture image to the gateway without pause;
  2. submits a tiny training job through the gateway's REST API and watches it finish;
  3. sees the new version published to `staging`;
  4. promotes it (the promotion gates refuse it unforced: it is worse than the bundled
     model; forced with a reason it moves) and watches inference answers switch to it,
     while the background client sees 0 errors;
  5. asks Prometheus's HTTP API that every service was scraped and its key metrics
     are there;
  6. a second start on the same state directory is refused; SIGINT stops everything
     and exits 0;
  7. a clinic's own 3 classes (image folders): trained, published, promoted (forced: its
     metrics do not compare), hot-loaded and answered through the gateway with 3 labels.

Environment: SKINLESION_BUILD_DIR (the build with every binary), SKINLESION_REPO.
"""
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

REPO = os.environ.get("SKINLESION_REPO", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("SKINLESION_BUILD_DIR", os.path.join(REPO, "build"))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "ham10000")
IMAGE = os.path.join(FIXTURES, "images", "ISIC_0024698.jpg")


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def http(method, url, body=None, headers=None, timeout=30):
    """Returns (status, parsed JSON or raw bytes, headers); never raises on HTTP errors."""
    data = body
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw, hdrs = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, raw, hdrs = e.code, e.read(), e.headers
    try:
        return status, json.loads(raw), hdrs
    except ValueError:
        return status, raw, hdrs


def wait_for(predicate, timeout, what, interval=0.5):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def tiny_job(epochs):
    """A training job on the committed fixtures that takes seconds (32 px ResNet-18)."""
    return {
        "model_name": "ham10000", "architecture": "resnet18",
        "data_dir": os.path.join(FIXTURES, "images"),
        "metadata_file": os.path.join(FIXTURES, "metadata_subset.csv"),
        "split_file": os.path.join(FIXTURES, "split_tiny.csv"),
        "image_size": 32, "epochs": epochs, "batch_size": 4, "seed": 7,
        "extra_json": json.dumps({"frozen_epochs": 1, "num_workers": 1, "threads": 1,
                                  "progress_interval_s": 0, "patience": 0}),
    }


def class_folders(root):
    """The committed fixtures as a clinic's image folders: benign/, melanoma/, other/."""
    groups = {"mel": "melanoma", "akiec": "other", "bcc": "other"}
    with open(os.path.join(FIXTURES, "metadata_subset.csv")) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        folder = os.path.join(root, groups.get(row["dx"], "benign"))
        os.makedirs(folder, exist_ok=True)
        shutil.copy(os.path.join(FIXTURES, "images", row["image_id"] + ".jpg"), folder)
    return root


class Cluster:
    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="skinlesion-cluster-")
        self.state = os.path.join(self.tmp.name, "cluster")
        names = ["GATEWAY", "INFERENCE", "INFERENCE_METRICS", "REGISTRY", "REGISTRY_METRICS",
                 "TRAINER", "TRAINER_METRICS", "PROMETHEUS"]
        self.ports = dict(zip(names, free_ports(len(names))))
        self.env = dict(os.environ)
        self.env.update({f"SKINLESION_{k}_PORT": str(v) for k, v in self.ports.items()})
        self.env.update({
            "SKINLESION_CLUSTER_DIR": self.state,
            "BUILD_DIR": BUILD,
            "SKINLESION_TOKEN": "e2e-token-7f3a",
            "SKINLESION_POLL_INTERVAL_S": "1",
            "SKINLESION_INFERENCE_THREADS": "1",
        })
        self.base = f"http://127.0.0.1:{self.ports['GATEWAY']}"
        self.prometheus = f"http://127.0.0.1:{self.ports['PROMETHEUS']}"
        self.out = []
        self.proc = None

    def start(self, timeout=240):
        self.proc = subprocess.Popen(
            ["bash", os.path.join(REPO, "scripts", "cluster.sh")], env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.out.append(line)
                if line.strip() == "CLUSTER READY":
                    ready.set()
        threading.Thread(target=pump, daemon=True).start()
        deadline = time.time() + timeout
        while not ready.wait(0.5):
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError("cluster did not start:\n" + "".join(self.out) +
                                     self.logs_tail())
        return self

    def logs_tail(self):
        logs = os.path.join(self.state, "logs")
        text = ""
        if os.path.isdir(logs):
            for name in sorted(os.listdir(logs)):
                with open(os.path.join(logs, name), errors="replace") as f:
                    text += f"\n--- {name} (tail) ---\n" + "".join(f.readlines()[-15:])
        return text

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode if self.proc else None


class Predictor(threading.Thread):
    """Closed-loop background client: every answer is recorded; errors are counted."""

    def __init__(self, base):
        super().__init__(daemon=True)
        with open(IMAGE, "rb") as f:
            self.image = f.read()
        self.url = base + "/api/v1/predictions"
        self.stop_flag = threading.Event()
        self.versions = []
        self.errors = []

    def run(self):
        while not self.stop_flag.is_set():
            status, body, _ = http("POST", self.url, self.image, {"Content-Type": "image/jpeg"})
            if status == 200:
                self.versions.append(body["model"]["version"])
            else:
                self.errors.append((status, body))
            time.sleep(0.05)


class ClusterEndToEnd(unittest.TestCase):
    def test_train_publish_promote_observe(self):
        cluster = Cluster()
        try:
            cluster.start()
            self._run(cluster)
        except Exception:
            print(cluster.logs_tail(), file=sys.stderr)
            raise
        finally:
            code = cluster.stop()
        self.assertEqual(code, 0, "cluster.sh should exit 0 on Ctrl-C:\n" + "".join(cluster.out[-20:]))
        self.assertFalse(os.path.exists(os.path.join(cluster.state, "pid")))
        cluster.tmp.cleanup()

    def _run(self, c):
        token = {"Authorization": "Bearer " + c.env["SKINLESION_TOKEN"]}
        status, models, _ = http("GET", c.base + "/api/v1/models")
        self.assertEqual(status, 200, models)
        model = next(m for m in models["models"] if m["name"] == "ham10000")
        self.assertEqual(model["aliases"]["production"], 1)

        # A second start on the same state directory says so and leaves this one alone.
        second = subprocess.run(["bash", os.path.join(REPO, "scripts", "cluster.sh")],
                                env=c.env, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(second.returncode, 0)
        self.assertIn("already running", second.stderr + second.stdout)

        background = Predictor(c.base)
        background.start()
        wait_for(lambda: len(background.versions) >= 3, 60, "first predictions")
        self.assertEqual(set(background.versions), {1})

        job = tiny_job(epochs=2)
        status, body, _ = http("POST", c.base + "/api/v1/jobs", job)
        self.assertEqual(status, 401, body)  # No token.
        done = self._run_job(c, job, token)
        self.assertEqual(done["published_version"], 2)
        _, models, _ = http("GET", c.base + "/api/v1/models")
        model = next(m for m in models["models"] if m["name"] == "ham10000")
        self.assertEqual(model["aliases"]["staging"], 2)
        self.assertEqual(model["aliases"]["production"], 1)
        # Still on the bundled model: staging is not served.
        self.assertEqual(set(background.versions), {1})

        alias_url = c.base + "/api/v1/models/ham10000/aliases/production"
        status, body, _ = http("PUT", alias_url, {"version": 2, "reason": "e2e"}, token)
        # Gates: the job's test figures (its own split) and the bundled model's were
        # measured on different images, so they do not compare: a person forces it.
        self.assertEqual(status, 412, body)
        self.assertIn("different images do not compare", body["message"])
        status, body, _ = http("PUT", alias_url,
                               {"version": 2, "reason": "e2e: forced", "force": True}, token)
        self.assertEqual(status, 200, body)

        switched = len(background.versions)
        wait_for(lambda: 2 in background.versions[switched:], 60, "inference to serve version 2")
        n = len(background.versions)
        wait_for(lambda: len(background.versions) >= n + 5, 30, "more predictions on v2")
        background.stop_flag.set()
        background.join(30)
        self.assertEqual(background.errors, [], "the background client saw errors")
        after = background.versions[background.versions.index(2):]
        self.assertEqual(set(after), {2}, "once switched, every answer comes from version 2")

        # Prometheus scraped every service, with their key metrics.
        def query(q):
            s, r, _ = http("GET", c.prometheus + "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
            return r["data"]["result"] if s == 200 and r.get("status") == "success" else []
        for job_name in ("skinlesion-inference", "skinlesion-trainer", "skinlesion-gateway",
                         "skinlesion-registry"):
            wait_for(lambda: [r for r in query(f'up{{job="{job_name}"}}') if r["value"][1] == "1"],
                     60, f"Prometheus to scrape {job_name}")
        for metric in ("skinlesion_inference_requests_total", "skinlesion_model_version_info",
                       "skinlesion_model_reloads_total", "skinlesion_inference_batch_size_bucket",
                       "skinlesion_gateway_requests_total", "skinlesion_gateway_request_seconds_bucket",
                       "skinlesion_trainer_jobs", "skinlesion_trainer_job_duration_seconds_count",
                       'skinlesion_grpc_requests_total{service="skinlesion.v1.RegistryService"}'):
            wait_for(lambda: query(metric), 60, f"{metric} in Prometheus")
        # The served version as Prometheus saw it last.
        wait_for(lambda: query('skinlesion_model_version_info{model="ham10000",version="2"}'), 60,
                 "Prometheus to see version 2 served")

        self._own_classes(c, token)

    def _run_job(self, c, job, token):
        """Submits `job` and waits for it: the finished job, which must have succeeded."""
        status, body, _ = http("POST", c.base + "/api/v1/jobs", job, token)
        self.assertEqual(status, 201, body)
        job_id = body["job_id"]

        def finished():
            s, j, _ = http("GET", f"{c.base}/api/v1/jobs/{job_id}")
            return j if s == 200 and j.get("state") in ("succeeded", "failed", "cancelled") else None
        done = wait_for(finished, 300, f"job {job_id} to finish", interval=1)
        self.assertEqual(done["state"], "succeeded", done)
        return done

    def _own_classes(self, c, token):
        """A clinic's own 3 classes: an image-folder dataset is trained, published,
        hot-loaded by inference and classified through the gateway with its labels."""
        clinic = class_folders(os.path.join(c.tmp.name, "clinic"))
        job = dict(tiny_job(epochs=2), data_dir=clinic, metadata_file="", split_file="")
        job["extra_json"] = json.dumps(dict(json.loads(job["extra_json"]), malignant_classes="melanoma"))
        done = self._run_job(c, job, token)
        self.assertEqual(done["published_version"], 3)
        # Its metrics do not compare with the 7-class model's: only a forced promotion.
        alias_url = c.base + "/api/v1/models/ham10000/aliases/production"
        status, body, _ = http("PUT", alias_url, {"version": 3, "reason": "e2e"}, token)
        self.assertEqual(status, 412, body)
        self.assertIn("classes", json.dumps(body))
        status, body, _ = http("PUT", alias_url,
                               {"version": 3, "reason": "e2e: a clinic's own classes", "force": True}, token)
        self.assertEqual(status, 200, body)

        with open(IMAGE, "rb") as f:
            image = f.read()

        def on_v3():
            s, b, _ = http("POST", c.base + "/api/v1/predictions", image, {"Content-Type": "image/jpeg"})
            return b if s == 200 and b["model"]["version"] == 3 else None
        answer = wait_for(on_v3, 60, "inference to serve the 3-class version 3")
        self.assertEqual([p["class"] for p in answer["probabilities"]], ["benign", "melanoma", "other"])
        self.assertEqual([p["malignant"] for p in answer["probabilities"]], [False, True, False])
        self.assertAlmostEqual(sum(p["probability"] for p in answer["probabilities"]), 1.0, places=4)
        self.assertIn(answer["top_class"], ("benign", "melanoma", "other"))
        self.assertEqual(len(answer["top"]), 3)
        _, models, _ = http("GET", c.base + "/api/v1/models")
        model = next(m for m in models["models"] if m["name"] == "ham10000")
        self.assertEqual([k["class"] for k in model["serving"]["classes"]], ["benign", "melanoma", "other"])


if __name__ == "__main__":
    unittest.main()
