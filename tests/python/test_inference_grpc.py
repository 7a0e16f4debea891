#!/usr/bin/python3
"""End-to-end test of the real `skinlesion-inference` binary from Python gRPC clients.

Makes a tiny random-weight model directory (make_test_model: resnet18 at 64 px),
starts the binary on it (--model_dir), and checks with stubs generated from our
protos (<build>/python_gen, grpcio + protobuf from Debian):
skinlesion.v1 Classify (also with explain=true) / ClassifyStream / ListServedModels, KServe v2 ServerLive /
ServerReady / ModelReady / ServerMetadata / ModelMetadata / ModelInfer (BYTES typed
and raw, FP32 typed and raw), grpc.health.v1, /metrics, then SIGTERM -> exit code 0.
Then the same model served from a local registry (--registry) and through
skinlesion-registry (--registry_target), and the binary's flag errors.

Run by CTest (inference_grpc_python) with these environment variables:
  SKINLESION_INFERENCE_BIN, SKINLESION_MAKE_TEST_MODEL, SKINLESION_REGISTRY_BIN,
  SKINLESION_PYTHON_GEN, SKINLESION_SOURCE_DIR.
"""
import math
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.environ["SKINLESION_PYTHON_GEN"])

import grpc  # noqa: E402
from kserve import grpc_predict_v2_pb2 as kserve_pb2  # noqa: E402
from kserve import grpc_predict_v2_pb2_grpc as kserve_grpc  # noqa: E402
from skinlesion.v1 import classification_pb2  # noqa: E402
from skinlesion.v1 import classification_pb2_grpc  # noqa: E402

MODEL = "ham10000"
SIZE = 64
CODES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
FIXTURES = os.path.join(os.environ["SKINLESION_SOURCE_DIR"], "tests/fixtures/ham10000/images")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_bytes(elements):
    """KServe raw BYTES tensor: each element's 4-byte little-endian length, then it."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def floats(raw):
    return list(struct.unpack("<%df" % (len(raw) // 4), raw))


def health(channel, service=""):
    """grpc.health.v1.Health/Check with hand-encoded messages: 1 SERVING, 2 NOT_SERVING."""
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    request = b"" if not service else b"\x0a" + bytes([len(service)]) + service.encode()
    response = check(request, timeout=5)
    return response[1] if len(response) == 2 and response[0] == 0x08 else 0


class Server:
    """A running skinlesion-inference: process, log, channel and stubs."""

    def __init__(self, workdir, source_args, extra_args=()):
        self.port, self.metrics_port = free_port(), free_port()
        self.log = open(os.path.join(workdir, "server-%d.log" % self.port), "w+")
        self.process = subprocess.Popen(
            [os.environ["SKINLESION_INFERENCE_BIN"], *source_args, "--model", MODEL,
             "--host", "127.0.0.1", "--port", str(self.port), "--metrics_port", str(self.metrics_port),
             "--threads", "1", "--drain_timeout_s", "5", *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
        self.classify = classification_pb2_grpc.ClassificationServiceStub(self.channel)
        self.kserve = kserve_grpc.GRPCInferenceServiceStub(self.channel)
        deadline = time.time() + 120
        while True:
            if self.process.poll() is not None:
                raise AssertionError("server exited with %d:\n%s" % (self.process.returncode, self.output()))
            try:
                if health(self.channel) == 1:
                    break
            except grpc.RpcError:
                pass
            if time.time() > deadline:
                self.stop()
                raise AssertionError("server not SERVING after 120 s:\n" + self.output())
            time.sleep(0.1)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def terminate(self):
        """SIGTERM; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.channel.close()
        self.log.close()


class InferenceServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        model_dir = os.path.join(cls.tmp.name, "model")
        subprocess.run([os.environ["SKINLESION_MAKE_TEST_MODEL"], model_dir, "resnet18", str(SIZE)],
                       check=True)
        cls.server = Server(cls.tmp.name, ["--model_dir", model_dir],
                            ["--max_batch_size", "4", "--max_queue_delay_ms", "50"])
        cls.channel, cls.classify, cls.kserve = cls.server.channel, cls.server.classify, cls.server.kserve
        cls.metrics_port = cls.server.metrics_port
        with open(os.path.join(FIXTURES, "ISIC_0024698.jpg"), "rb") as f:
            cls.jpeg = f.read()
        with open(os.path.join(FIXTURES, "ISIC_0024693.jpg"), "rb") as f:
            cls.jpeg2 = f.read()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.tmp.cleanup()

    # ------------------------------------------------------------ health, KServe metadata

    def test_01_health_serving(self):
        self.assertEqual(health(self.channel), 1)
        self.assertEqual(health(self.channel, "skinlesion.v1.ClassificationService"), 1)
        self.assertEqual(health(self.channel, "inference.GRPCInferenceService"), 1)

    def test_02_kserve_live_ready_metadata(self):
        self.assertTrue(self.kserve.ServerLive(kserve_pb2.ServerLiveRequest(), timeout=5).live)
        self.assertTrue(self.kserve.ServerReady(kserve_pb2.ServerReadyRequest(), timeout=5).ready)
        self.assertTrue(self.kserve.ModelReady(kserve_pb2.ModelReadyRequest(name=MODEL), timeout=5).ready)
        self.assertTrue(
            self.kserve.ModelReady(kserve_pb2.ModelReadyRequest(name=MODEL, version="1"), timeout=5).ready)
        server = self.kserve.ServerMetadata(kserve_pb2.ServerMetadataRequest(), timeout=5)
        self.assertEqual(server.name, "skinlesion")
        self.assertTrue(server.version)
        meta = self.kserve.ModelMetadata(kserve_pb2.ModelMetadataRequest(name=MODEL), timeout=5)
        self.assertEqual(meta.name, MODEL)
        self.assertEqual(list(meta.versions), ["1"])
        self.assertEqual(meta.platform, "pytorch_libtorch")
        inputs = {t.name: (t.datatype, list(t.shape)) for t in meta.inputs}
        self.assertEqual(inputs, {"image": ("BYTES", [-1]), "input": ("FP32", [-1, 3, SIZE, SIZE])})
        outputs = {t.name: (t.datatype, list(t.shape)) for t in meta.outputs}
        self.assertEqual(outputs, {"probabilities": ("FP32", [-1, 7]), "logits": ("FP32", [-1, 7]),
                                   "malignancy_risk": ("FP32", [-1, 1]), "refer": ("BOOL", [-1, 1]),
                                   "out_of_distribution": ("BOOL", [-1, 1]), "ood_score": ("FP32", [-1, 1])})
        with self.assertRaises(grpc.RpcError) as caught:
            self.kserve.ModelMetadata(kserve_pb2.ModelMetadataRequest(name="nope"), timeout=5)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)

    # ------------------------------------------------------------ skinlesion.v1

    def check_classify_response(self, response, top_k=3):
        self.assertEqual([p.lesion_class.code for p in response.probabilities], CODES)
        probabilities = [p.probability for p in response.probabilities]
        self.assertAlmostEqual(sum(probabilities), 1.0, places=4)
        self.assertEqual(len(response.top), top_k)
        top = [p.probability for p in response.top]
        self.assertEqual(top, sorted(top, reverse=True))
        self.assertAlmostEqual(response.top[0].probability, max(probabilities), places=6)
        self.assertAlmostEqual(response.malignancy_risk,
                               probabilities[0] + probabilities[1] + probabilities[4], places=5)
        self.assertEqual(response.model.name, MODEL)
        self.assertEqual(response.model.version, 1)
        self.assertGreaterEqual(response.timing.batch_size, 1)
        self.assertGreater(response.timing.total_ms, 0)

    def test_03_classify(self):
        response = self.classify.Classify(
            classification_pb2.ClassifyRequest(image=self.jpeg, request_id="a", top_k=4), timeout=30)
        self.assertEqual(response.request_id, "a")
        self.check_classify_response(response, top_k=4)
        if response.refer:
            self.assertTrue(response.refer_reason)

    def test_03b_classify_explain(self):
        # Grad-CAM of the top class on resnet18's last feature map: 64 px / 32 = 2 x 2.
        response = self.classify.Classify(
            classification_pb2.ClassifyRequest(image=self.jpeg, explain=True), timeout=60)
        self.check_classify_response(response)
        e = response.explanation
        self.assertEqual(e.method, "grad-cam")
        self.assertEqual((e.width, e.height), (SIZE // 32, SIZE // 32))
        self.assertEqual(e.covers, "center-square")
        self.assertEqual(len(e.heat), e.width * e.height)
        self.assertTrue(all(0.0 <= h <= 1.0 for h in e.heat), list(e.heat))
        self.assertIn(max(e.heat), (0.0, 1.0))  # Normalised by its maximum.
        plain = self.classify.Classify(classification_pb2.ClassifyRequest(image=self.jpeg), timeout=30)
        self.assertFalse(plain.HasField("explanation"))
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10).read().decode()
        self.assertIn('skinlesion_inference_explanations_total{model="%s",outcome="ok"} 1' % MODEL, body)
        self.assertIn('skinlesion_inference_explain_seconds_count{model="%s"} 1' % MODEL, body)

    def test_04_classify_errors(self):
        for request, code in [
            (classification_pb2.ClassifyRequest(image=b""), grpc.StatusCode.INVALID_ARGUMENT),
            (classification_pb2.ClassifyRequest(image=b"not an image"), grpc.StatusCode.INVALID_ARGUMENT),
            (classification_pb2.ClassifyRequest(image=self.jpeg, model="other"), grpc.StatusCode.NOT_FOUND),
            (classification_pb2.ClassifyRequest(image=self.jpeg, version=5), grpc.StatusCode.NOT_FOUND),
        ]:
            with self.assertRaises(grpc.RpcError) as caught:
                self.classify.Classify(request, timeout=30)
            self.assertEqual(caught.exception.code(), code, caught.exception.details())
            self.assertTrue(caught.exception.details())

    def test_05_classify_stream_answers_every_item(self):
        images = [self.jpeg, b"garbage", self.jpeg2, self.jpeg]
        requests = [classification_pb2.ClassifyRequest(image=img, request_id=str(i)) for i, img in enumerate(images)]
        responses = list(self.classify.ClassifyStream(iter(requests), timeout=60))
        self.assertEqual([r.request_id for r in responses], ["0", "1", "2", "3"])
        self.assertEqual(responses[1].error_code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        self.assertTrue(responses[1].error_message)
        for i in (0, 2, 3):
            self.assertEqual(responses[i].error_code, 0)
            self.check_classify_response(responses[i])
        # The same image gives the same answer. Not bit for bit: the batcher may put the two
        # copies into batches of different sizes, and the matrix kernels' blocking (so the order
        # of the sums) depends on the batch size; seen 3e-8 apart.
        for first, again in zip(responses[0].probabilities, responses[3].probabilities):
            self.assertAlmostEqual(first.probability, again.probability, delta=1e-5)
        self.assertEqual(responses[0].refer, responses[3].refer)

    def test_06_list_served_models(self):
        response = self.classify.ListServedModels(classification_pb2.ListServedModelsRequest(), timeout=5)
        self.assertEqual(len(response.models), 1)
        served = response.models[0]
        self.assertEqual(served.model.name, MODEL)
        self.assertEqual(served.model.version, 1)
        self.assertEqual(served.architecture, "resnet18")
        self.assertEqual(served.input_size, SIZE)
        self.assertTrue(served.ready)

    # ------------------------------------------------------------ KServe ModelInfer

    def test_07_model_infer_bytes_raw_and_typed(self):
        # Raw, as tritonclient sends it: [N, 1] BYTES with length-prefixed elements.
        request = kserve_pb2.ModelInferRequest(model_name=MODEL, id="x1")
        tensor = request.inputs.add(name="image", datatype="BYTES", shape=[2, 1])
        request.raw_input_contents.append(raw_bytes([self.jpeg, self.jpeg2]))
        raw = self.kserve.ModelInfer(request, timeout=60)
        self.assertEqual(raw.id, "x1")
        self.assertEqual(raw.model_name, MODEL)
        self.assertEqual(raw.model_version, "1")
        self.assertEqual([o.name for o in raw.outputs], ["probabilities", "logits"])
        self.assertEqual(list(raw.outputs[0].shape), [2, 7])
        raw_probabilities = floats(raw.raw_output_contents[0])
        self.assertEqual(len(raw_probabilities), 14)
        for row in (raw_probabilities[:7], raw_probabilities[7:]):
            self.assertAlmostEqual(sum(row), 1.0, places=4)

        # Typed contents, probabilities only: same numbers, answered typed.
        request = kserve_pb2.ModelInferRequest(model_name=MODEL)
        tensor = request.inputs.add(name="image", datatype="BYTES", shape=[2])
        tensor.contents.bytes_contents.extend([self.jpeg, self.jpeg2])
        request.outputs.add(name="probabilities")
        typed = self.kserve.ModelInfer(request, timeout=60)
        self.assertEqual(len(typed.raw_output_contents), 0)
        self.assertEqual([o.name for o in typed.outputs], ["probabilities"])
        for a, b in zip(typed.outputs[0].contents.fp32_contents, raw_probabilities):
            self.assertAlmostEqual(a, b, places=5)

        # Classify agrees with ModelInfer on the same image.
        response = self.classify.Classify(classification_pb2.ClassifyRequest(image=self.jpeg), timeout=30)
        for a, b in zip([p.probability for p in response.probabilities], raw_probabilities[:7]):
            self.assertAlmostEqual(a, b, places=5)

    def test_07b_model_infer_per_image_outputs(self):
        # malignancy_risk, refer, out_of_distribution and ood_score on request, typed and
        # raw, agreeing with Classify; ood_score is -logsumexp(logits).
        names = ["logits", "malignancy_risk", "refer", "out_of_distribution", "ood_score"]
        for raw_mode in (False, True):
            request = kserve_pb2.ModelInferRequest(model_name=MODEL)
            tensor = request.inputs.add(name="image", datatype="BYTES", shape=[2, 1] if raw_mode else [2])
            if raw_mode:
                request.raw_input_contents.append(raw_bytes([self.jpeg, self.jpeg2]))
            else:
                tensor.contents.bytes_contents.extend([self.jpeg, self.jpeg2])
            for name in names:
                request.outputs.add(name=name)
            response = self.kserve.ModelInfer(request, timeout=60)
            self.assertEqual([o.name for o in response.outputs], names)
            self.assertEqual([(o.datatype, list(o.shape)) for o in response.outputs[1:]],
                             [("FP32", [2, 1]), ("BOOL", [2, 1]), ("BOOL", [2, 1]), ("FP32", [2, 1])])
            if raw_mode:
                logits = floats(response.raw_output_contents[0])
                risk = floats(response.raw_output_contents[1])
                refer = [b != 0 for b in response.raw_output_contents[2]]
                ood = [b != 0 for b in response.raw_output_contents[3]]
                score = floats(response.raw_output_contents[4])
            else:
                logits = list(response.outputs[0].contents.fp32_contents)
                risk = list(response.outputs[1].contents.fp32_contents)
                refer = list(response.outputs[2].contents.bool_contents)
                ood = list(response.outputs[3].contents.bool_contents)
                score = list(response.outputs[4].contents.fp32_contents)
            self.assertEqual(ood, [False, False])  # The test model has no OOD threshold.
            for i, image in enumerate([self.jpeg, self.jpeg2]):
                row = logits[7 * i:7 * i + 7]
                m = max(row)
                self.assertAlmostEqual(score[i], -(m + math.log(sum(math.exp(z - m) for z in row))), places=4)
                classified = self.classify.Classify(classification_pb2.ClassifyRequest(image=image), timeout=30)
                self.assertAlmostEqual(risk[i], classified.malignancy_risk, places=5)
                self.assertEqual(refer[i], classified.refer)
                self.assertAlmostEqual(score[i], classified.ood_score, places=4)
                self.assertFalse(classified.out_of_distribution)

    def test_08_model_infer_fp32_typed_and_raw(self):
        rng = random.Random(7)
        values = [rng.gauss(0.0, 1.0) for _ in range(3 * SIZE * SIZE)]
        request = kserve_pb2.ModelInferRequest(model_name=MODEL, model_version="1")
        tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 3, SIZE, SIZE])
        tensor.contents.fp32_contents.extend(values)
        typed = self.kserve.ModelInfer(request, timeout=60)
        probabilities = list(typed.outputs[0].contents.fp32_contents)
        self.assertEqual(len(probabilities), 7)
        self.assertAlmostEqual(sum(probabilities), 1.0, places=4)

        request = kserve_pb2.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="input", datatype="FP32", shape=[1, 3, SIZE, SIZE])
        request.raw_input_contents.append(struct.pack("<%df" % len(values), *values))
        raw = self.kserve.ModelInfer(request, timeout=60)
        for a, b in zip(floats(raw.raw_output_contents[0]), probabilities):
            self.assertAlmostEqual(a, b, places=5)
        logits = floats(raw.raw_output_contents[1])
        self.assertEqual(len(logits), 7)

    def test_09_model_infer_errors(self):
        def infer(mutate):
            request = kserve_pb2.ModelInferRequest(model_name=MODEL)
            request.inputs.add(name="input", datatype="FP32", shape=[1, 3, SIZE, SIZE])
            request.raw_input_contents.append(b"\0" * (3 * SIZE * SIZE * 4))
            mutate(request)
            with self.assertRaises(grpc.RpcError) as caught:
                self.kserve.ModelInfer(request, timeout=30)
            return caught.exception

        error = infer(lambda r: r.inputs[0].ClearField("shape") or r.inputs[0].shape.extend([1, 3, 32, 32]))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("[N,3,%d,%d]" % (SIZE, SIZE), error.details())
        error = infer(lambda r: setattr(r.inputs[0], "datatype", "FP16"))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        error = infer(lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 12))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        error = infer(lambda r: setattr(r, "model_name", "nope"))
        self.assertEqual(error.code(), grpc.StatusCode.NOT_FOUND)
        error = infer(lambda r: setattr(r, "model_version", "2"))
        self.assertEqual(error.code(), grpc.StatusCode.NOT_FOUND)

    # ------------------------------------------------------------ metrics, shutdown

    def test_10_metrics_endpoint(self):
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10).read().decode()
        self.assertIn("skinlesion_grpc_requests_total{", body)
        self.assertIn('method="Classify"', body)
        # Counted by the server's gRPC interceptor with each call's final code: the bad
        # images of test_04, the one stream of test_05 (OK despite its bad item), health.
        classification = 'service="skinlesion.v1.ClassificationService"'
        self.assertIn('skinlesion_grpc_requests_total{code="INVALID_ARGUMENT",method="Classify",%s}'
                      % classification, body)
        self.assertIn('skinlesion_grpc_requests_total{code="OK",method="ClassifyStream",%s} 1'
                      % classification, body)
        self.assertIn('skinlesion_grpc_requests_total{code="OK",method="Check",'
                      'service="grpc.health.v1.Health"}', body)
        self.assertIn("skinlesion_inference_requests_total", body)

    def batch_histogram(self):
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10).read().decode()
        values = {}
        for line in body.splitlines():
            for suffix in ("_count", "_sum"):
                prefix = 'skinlesion_inference_batch_size%s{model="%s"}' % (suffix, MODEL)
                if line.startswith(prefix):
                    values[suffix] = float(line.split()[-1])
        return values.get("_count", 0.0), values.get("_sum", 0.0)

    def test_11_model_infer_items_run_as_one_batch(self):
        # The N items of one ModelInfer reach the core together: one batch of 4.
        count, total = self.batch_histogram()
        request = kserve_pb2.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="input", datatype="FP32", shape=[4, 3, SIZE, SIZE])
        request.raw_input_contents.append(b"\0" * (4 * 3 * SIZE * SIZE * 4))
        response = self.kserve.ModelInfer(request, timeout=60)
        self.assertEqual(list(response.outputs[0].shape), [4, 7])
        count2, total2 = self.batch_histogram()
        self.assertEqual((count2 - count, total2 - total), (1.0, 4.0))

    def test_99_sigterm_drains_and_exits_zero(self):
        # A call in flight when SIGTERM arrives still completes.
        future = self.classify.Classify.future(classification_pb2.ClassifyRequest(image=self.jpeg), timeout=30)
        time.sleep(0.05)
        self.server.process.send_signal(signal.SIGTERM)
        self.check_classify_response(future.result())
        self.assertEqual(self.server.process.wait(timeout=30), 0, self.server.output())
        self.assertIn("SIGTERM", self.server.output())


class RegistrySourcesTest(unittest.TestCase):
    """The binary over a local registry and over skinlesion-registry."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.root = os.path.join(cls.tmp.name, "registry")
        # Published as version 1 of MODEL with "production" on it.
        subprocess.run([os.environ["SKINLESION_MAKE_TEST_MODEL"], os.path.join(cls.tmp.name, "model"),
                        "resnet18", str(SIZE), cls.root, MODEL], check=True)
        with open(os.path.join(FIXTURES, "ISIC_0024698.jpg"), "rb") as f:
            cls.jpeg = f.read()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def check_served(self, server):
        response = server.classify.Classify(classification_pb2.ClassifyRequest(image=self.jpeg), timeout=30)
        self.assertEqual(response.model.name, MODEL)
        self.assertEqual(response.model.version, 1)
        self.assertEqual(response.model.alias, "production")
        self.assertEqual(len(response.model.sha256), 64)
        self.assertAlmostEqual(sum(p.probability for p in response.probabilities), 1.0, places=4)
        served = server.classify.ListServedModels(classification_pb2.ListServedModelsRequest(), timeout=5)
        self.assertEqual(served.models[0].model.alias, "production")
        self.assertEqual(server.terminate(), 0, server.output())

    def test_local_registry(self):
        server = Server(self.tmp.name, ["--registry", self.root])
        try:
            self.check_served(server)
        finally:
            server.stop()

    def test_remote_registry(self):
        port = free_port()
        registry = subprocess.Popen([os.environ["SKINLESION_REGISTRY_BIN"], "--root", self.root,
                                     "--address", "127.0.0.1", "--port", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            cache = os.path.join(self.tmp.name, "cache")
            server = Server(self.tmp.name, ["--registry_target", "127.0.0.1:%d" % port, "--cache_dir", cache])
            try:
                self.check_served(server)
            finally:
                server.stop()
            cached = [f for _, _, files in os.walk(cache) for f in files]
            self.assertIn("model.safetensors", cached)
        finally:
            registry.terminate()
            registry.wait(timeout=30)

    def test_bad_flags_exit_1_with_a_message(self):
        binary = os.environ["SKINLESION_INFERENCE_BIN"]
        for args, message in [
            ([], "exactly one of --registry"),
            (["--registry", self.root, "--model_dir", self.root], "exactly one of --registry"),
            (["--registry", os.path.join(self.tmp.name, "missing")], "NOT_FOUND"),
            (["--registry", self.root, "--max_batch_size", "0"], "--max_batch_size must be >= 1"),
            (["--registry", self.root, "--port", "70000"], "--port must be in 0..65535"),
        ]:
            result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 1, (args, result.stderr))
            self.assertIn(message, result.stderr, args)


if __name__ == "__main__":
    unittest.main()
