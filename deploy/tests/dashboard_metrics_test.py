#!/usr/bin/python3
"""ctest deploy_dashboard_metrics: every metric that the Grafana dashboard
(deploy/grafana/skinlesion-dashboard.json) and the alert rules
(deploy/prometheus/alerts.rules.yml) query exists in the real services' /metrics.

The services run as Kubernetes runs them: with the ConfigMap flag files of
deploy/k8s/base/flags (so a misspelt flag there fails here too), overridden only for
addresses, ports and paths; the registry is seeded with models/bundled by the same
`skinlesion publish` as the trainer's init container; inference follows the
trainer's RegistryService. Traffic makes the labelled series appear: one Classify
call, one with explain=true, one tiny training job (watched until it reports progress, then cancelled so
that its duration is observed), and through the gateway (when built) one prediction,
then one with inference stopped (an upstream error).

Environment: SKINLESION_SOURCE_DIR, SKINLESION_PYTHON_GEN (generated stubs),
SKINLESION_INFERENCE_BIN, SKINLESION_TRAINER_BIN, SKINLESION_CLI, and
SKINLESION_GATEWAY_BIN (empty when the gateway is not built: its metric names are
then listed as unchecked and the test says so).
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import yaml

SOURCE = os.environ["SKINLESION_SOURCE_DIR"]
sys.path.insert(0, os.environ["SKINLESION_PYTHON_GEN"])

import grpc  # noqa: E402
from skinlesion.v1 import classification_pb2, classification_pb2_grpc  # noqa: E402
from skinlesion.v1 import training_pb2, training_pb2_grpc  # noqa: E402

DASHBOARD = os.path.join(SOURCE, "deploy/grafana/skinlesion-dashboard.json")
RULES = os.path.join(SOURCE, "deploy/prometheus/alerts.rules.yml")
FLAGS = os.path.join(SOURCE, "deploy/k8s/base/flags")
FIXTURES = os.path.join(SOURCE, "tests/fixtures/ham10000")
TOKEN = "dashboard-test-token"
# Series that Prometheus itself writes for every target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

# ----------------------------------------------------------------- PromQL names

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "inf", "nan", "atan2"}


def metric_names(expr):
    """The metric names a PromQL expression selects (functions, keywords, labels,
    durations and Grafana variables removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.$:])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def dashboard_queries(path):
    """(where, PromQL) for every panel target and every query variable."""
    with open(path) as f:
        dash = json.load(f)
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f"panel '{p.get('title')}'", t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*(?:label_values|query_result)\((.*)\)\s*", q, re.S)
        if m and q.strip().startswith("label_values"):
            # label_values(selector, label) or label_values(label).
            args = m.group(1).rsplit(",", 1)
            expr = args[0] if len(args) == 2 else ""
        else:
            expr = m.group(1) if m else q
        if expr:
            out.append((f"variable '{var.get('name')}'", expr))
    return out


def rule_queries(path):
    with open(path) as f:
        rules = yaml.safe_load(f)
    return [(f"alert {r.get('alert') or r.get('record')}", r["expr"])
            for g in rules["groups"] for r in g["rules"]]


def exposed_names(text):
    """Sample names in a Prometheus text exposition, plus the names implied by each
    # TYPE line (a histogram family `x` is queried as x_bucket / x_sum / x_count)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                family, kind = parts[2], parts[3]
                names.add(family)
                if kind == "histogram":
                    names.update({family + "_bucket", family + "_sum", family + "_count"})
                elif kind == "summary":
                    names.update({family + "_sum", family + "_count"})
        elif line and not line.startswith("#"):
            names.add(re.match(r"[A-Za-z_:][\w:]*", line).group(0))
    return names


# ------------------------------------------------------------------ processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def health(channel):
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    response = check(b"", timeout=5)
    return response[1] if len(response) == 2 and response[0] == 0x08 else 0


class Service:
    def __init__(self, name, args, workdir):
        self.name = name
        self.log_path = os.path.join(workdir, name + ".log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))

    def output(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()[-4000:]

    def wait_for(self, pattern, seconds=120):
        """The first match of `pattern` in the log; fails if the process exits."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            m = re.search(pattern, self.output())
            if m:
                return m
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: no '{pattern}' after {seconds} s:\n{self.output()}")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def poll(fn, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


class ExtractorTest(unittest.TestCase):
    """The name extractor itself (a wrong one would pass everything)."""

    def test_names(self):
        cases = {
            'sum by (outcome) (rate(skinlesion_inference_requests_total{model=~"$model"}[$__rate_interval]))':
                {"skinlesion_inference_requests_total"},
            'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y(z)"}[5m]))) > 1': {"a_bucket"},
            'sum(rate(a_total[5m])) / ignoring(code) group_left sum(b) > bool 0.5 unless c offset 1h':
                {"a_total", "b", "c"},
            'up{job=~"skinlesion-.*"} == 0': {"up"},
            'increase(x_count{state="failed"}[1h]) > 1e3 and on(instance) y': {"x_count", "y"},
            'max by (instance, model, version, sha256) (skinlesion_model_version_info)':
                {"skinlesion_model_version_info"},
        }
        for expr, want in cases.items():
            self.assertEqual(metric_names(expr), want, expr)

    def test_exposition(self):
        text = ("# HELP h A histogram\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\n"
                "# TYPE g gauge\ng{a=\"b\"} 1\nc_total 3\n")
        self.assertEqual(exposed_names(text), {"h", "h_bucket", "h_sum", "h_count", "g", "c_total"})

    def test_dashboard_and_rules_query_something(self):
        dash, rules = dashboard_queries(DASHBOARD), rule_queries(RULES)
        self.assertGreaterEqual(len(dash), 20)
        self.assertGreaterEqual(len(rules), 6)
        for where, expr in dash + rules:
            self.assertTrue(metric_names(expr), f"{where}: no metric in '{expr}'")


class DashboardMetricsTest(unittest.TestCase):
    def test_every_queried_metric_is_exposed(self):
        queried = {}  # name -> where it is used
        for where, expr in dashboard_queries(DASHBOARD) + rule_queries(RULES):
            for name in metric_names(expr):
                queried.setdefault(name, []).append(where)

        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        work = tmp.name
        token_file = os.path.join(work, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        registry = os.path.join(work, "registry")
        cli = os.environ["SKINLESION_CLI"]
        # The trainer's init container, verbatim apart from the paths.
        subprocess.run([cli, "publish", "--model", os.path.join(SOURCE, "models/bundled"),
                        "--registry", registry, "--name", "ham10000", "--alias", "production"],
                       check=True, capture_output=True, timeout=120,
                       env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))

        services = []
        self.addCleanup(lambda: [s.stop() for s in reversed(services)])
        trainer = Service("trainer", [
            os.environ["SKINLESION_TRAINER_BIN"], f"--flagfile={FLAGS}/trainer.flags",
            "--address=127.0.0.1", "--port=0", "--metrics_port=0",
            f"--state_dir={work}/trainer", f"--registry_root={registry}", f"--cli={cli}",
            f"--token_file={token_file}"], work)
        services.append(trainer)
        trainer_port = int(trainer.wait_for(r"skinlesion-trainer listening on [\d.]+:(\d+)").group(1))
        trainer_metrics = int(trainer.wait_for(r"skinlesion-trainer metrics on [\d.]+:(\d+)").group(1))

        inference_port = free_port()
        inference = Service("inference", [
            os.environ["SKINLESION_INFERENCE_BIN"], f"--flagfile={FLAGS}/inference.flags",
            "--host=127.0.0.1", f"--port={inference_port}", "--metrics_port=0",
            f"--registry_target=127.0.0.1:{trainer_port}", f"--cache_dir={work}/cache",
            "--threads=1", "--drain_timeout_s=1"], work)
        services.append(inference)
        inference_metrics = int(inference.wait_for(r"metrics on http://[\d.]+:(\d+)/metrics").group(1))
        channel = grpc.insecure_channel(f"127.0.0.1:{inference_port}")
        self.addCleanup(channel.close)

        def serving():
            try:
                return health(channel) == 1
            except grpc.RpcError:
                return inference.process.poll() is not None and self.fail(inference.output())
        poll(serving, 120, "inference SERVING (bundled model from the trainer's registry)")
        with open(os.path.join(FIXTURES, "images/ISIC_0024698.jpg"), "rb") as f:
            jpeg = f.read()
        classify = classification_pb2_grpc.ClassificationServiceStub(channel)
        response = classify.Classify(classification_pb2.ClassifyRequest(image=jpeg), timeout=60)
        self.assertEqual(len(response.probabilities), 7)
        explained = classify.Classify(classification_pb2.ClassifyRequest(image=jpeg, explain=True),
                                      timeout=60)
        self.assertTrue(explained.HasField("explanation"))

        # A tiny job: scrape while it runs (progress, loss, throughput), cancel it,
        # scrape again (its duration).
        tchannel = grpc.insecure_channel(f"127.0.0.1:{trainer_port}")
        self.addCleanup(tchannel.close)
        jobs = training_pb2_grpc.TrainerServiceStub(tchannel)
        auth = (("authorization", "Bearer " + TOKEN),)
        config = training_pb2.TrainingConfig(
            model_name="dashboardtest", architecture="resnet18",
            data_dir=os.path.join(FIXTURES, "images"),
            metadata_file=os.path.join(FIXTURES, "metadata_subset.csv"),
            split_file=os.path.join(FIXTURES, "split_tiny.csv"), image_size=32, epochs=200,
            batch_size=4,
            extra_json=json.dumps({"frozen_epochs": 1, "num_workers": 1, "threads": 1,
                                   "progress_interval_s": 0, "patience": 0}))
        job = jobs.SubmitJob(training_pb2.SubmitJobRequest(config=config), metadata=auth, timeout=30)
        scrapes = {}

        def scrape(name, port):
            status, text = http_get(f"http://127.0.0.1:{port}/metrics")
            self.assertEqual(status, 200)
            scrapes[name] = scrapes.get(name, "") + text
            return text

        poll(lambda: "skinlesion_trainer_job_progress{" in scrape("trainer", trainer_metrics), 180,
             f"the job's progress in the trainer's /metrics (log:\n{trainer.output()})")
        jobs.CancelJob(training_pb2.CancelJobRequest(id=job.id), metadata=auth, timeout=30)
        poll(lambda: "skinlesion_trainer_job_duration_seconds_count{" in scrape("trainer", trainer_metrics),
             60, "the cancelled job's duration in the trainer's /metrics")
        scrape("inference", inference_metrics)

        gateway_bin = os.environ.get("SKINLESION_GATEWAY_BIN", "")
        if gateway_bin:
            gateway_port = free_port()
            gateway = Service("gateway", [
                gateway_bin, f"--flagfile={FLAGS}/gateway.flags", "--host=127.0.0.1",
                f"--port={gateway_port}", f"--inference_target=127.0.0.1:{inference_port}",
                f"--trainer_target=127.0.0.1:{trainer_port}",
                f"--registry_target=127.0.0.1:{trainer_port}", f"--token_file={token_file}",
                f"--web_root={os.path.join(SOURCE, 'web')}"], work)
            services.append(gateway)
            base = f"http://127.0.0.1:{gateway_port}"

            def ready():
                try:
                    return http_get(base + "/readyz")[0] == 200
                except (urllib.error.URLError, ConnectionError):
                    return gateway.process.poll() is not None and self.fail(gateway.output())
            poll(ready, 60, "gateway /readyz")

            def predict():
                req = urllib.request.Request(base + "/api/v1/predictions", data=jpeg, method="POST",
                                             headers={"Content-Type": "image/jpeg"})
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        return r.status
                except urllib.error.HTTPError as e:
                    return e.code
            self.assertEqual(predict(), 200)
            inference.stop()  # Now an upstream error (and any retries) is counted.
            self.assertGreaterEqual(predict(), 500)
            scrape("gateway", gateway_port)

        exposed = {name: exposed_names(text) for name, text in scrapes.items()}
        everything = set().union(*exposed.values())
        missing, unchecked = [], []
        for name, where in sorted(queried.items()):
            if name in everything or name in PROMETHEUS_SYNTHETIC:
                continue
            if not gateway_bin and name.startswith("skinlesion_gateway_"):
                unchecked.append(name)
                continue
            missing.append(f"{name} (used by {', '.join(sorted(set(where)))})")
        if unchecked:
            print(f"UNCHECKED (skinlesion-gateway not built): {', '.join(unchecked)}", file=sys.stderr)
        print(f"{len(queried)} metric names queried; exposed by "
              + ", ".join(f"{k}: {len(v)} names" for k, v in sorted(exposed.items())), file=sys.stderr)
        self.assertFalse(missing, "queried but exposed by no service's /metrics:\n  " + "\n  ".join(missing))


if __name__ == "__main__":
    unittest.main()
