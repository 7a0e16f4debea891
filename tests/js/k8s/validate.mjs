// Renders every kustomize overlay of deploy/k8s and checks the result:
//   1. `kubectl kustomize deploy/k8s/overlays/<overlay>` succeeds;
//   2. every object validates against the Kubernetes schemas (npm kubernetes-models,
//      and @kubernetes-models/prometheus-operator for ServiceMonitor / PrometheusRule);
//   3. the deployment policies of docs/operations.md hold: non-root, read-only root
//      filesystem, no privilege escalation, dropped capabilities, probes (gRPC for
//      inference), resources, PDB + HPA for inference, NetworkPolicies, references
//      between objects (ConfigMaps, Secrets, PVCs, Service ports, flag files), and a
//      GPU request in the gpu overlay only.
// kubernetes-models does not reject unknown fields, so the policy checks below look
// for the fields that matter by name (a misspelt readinessProbe fails them).
//
//   node tests/js/k8s/validate.mjs [--kubectl PATH] [--repo DIR] [overlay ...]
// Exit 0 when every overlay passes; otherwise every problem is printed, exit 1.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

let parseAllDocuments;
try {
  ({ parseAllDocuments } = await import("yaml"));
  await import("kubernetes-models/v1/Namespace");
} catch (error) {
  console.error(`validate.mjs: ${error.message}\nInstall the npm packages first: npm ci --prefix tests/js`);
  process.exit(2);
}

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
let kubectl = process.env.KUBECTL || "kubectl";
let repo = path.resolve(here, "../../..");
const overlays = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--kubectl") kubectl = args[++i];
  else if (args[i] === "--repo") repo = path.resolve(args[++i]);
  else if (args[i].startsWith("-")) {
    console.error(`validate.mjs: unknown option ${args[i]}`);
    process.exit(2);
  } else overlays.push(args[i]);
}
if (overlays.length === 0) overlays.push("cpu", "gpu");

const NAMESPACE = "skinlesion";
const problems = [];

// apiVersion + kind -> the kubernetes-models class.
async function modelClass(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const candidates =
    group === "monitoring.coreos.com"
      ? [`@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`]
      : [`kubernetes-models/${group ? `${group}/` : ""}${version}/${kind}`];
  for (const spec of candidates) {
    try {
      const module = await import(spec);
      if (module[kind]) return module[kind];
    } catch (error) {
      if (error.code !== "ERR_MODULE_NOT_FOUND" && error.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED") {
        throw error;
      }
    }
  }
  return null;
}

function render(overlay) {
  const dir = path.join(repo, "deploy/k8s/overlays", overlay);
  try {
    return execFileSync(kubectl, ["kustomize", dir], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      maxBuffer: 64 << 20,
    });
  } catch (error) {
    problems.push(`${overlay}: '${kubectl} kustomize ${dir}' failed: ${error.stderr || error.message}`);
    return null;
  }
}

function checkPolicies(overlay, objects) {
  const fail = (what) => problems.push(`${overlay}: ${what}`);
  const byKind = (kind) => objects.filter((o) => o.kind === kind);
  const find = (kind, name) => objects.find((o) => o.kind === kind && o.metadata?.name === name);
  const labelsMatch = (selector, labels) =>
    Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);

  for (const o of objects) {
    const id = `${o.kind}/${o.metadata?.name}`;
    if (o.kind !== "Namespace" && o.metadata?.namespace !== NAMESPACE) {
      fail(`${id} is in namespace '${o.metadata?.namespace}', not '${NAMESPACE}'`);
    }
  }
  if (!find("Namespace", NAMESPACE)) fail(`no Namespace ${NAMESPACE}`);

  const deployments = byKind("Deployment");
  for (const name of ["skinlesion-gateway", "skinlesion-inference", "skinlesion-trainer"]) {
    if (!find("Deployment", name)) fail(`no Deployment ${name}`);
  }
  for (const d of deployments) {
    const id = `Deployment/${d.metadata.name}`;
    const pod = d.spec.template.spec;
    const podLabels = d.spec.template.metadata?.labels;
    if (!labelsMatch(d.spec.selector.matchLabels, podLabels)) fail(`${id}: selector does not match its pod labels`);
    if (pod.securityContext?.runAsNonRoot !== true) fail(`${id}: pod securityContext.runAsNonRoot is not true`);
    if (!(pod.securityContext?.runAsUser > 0)) fail(`${id}: pod securityContext.runAsUser is not a non-zero uid`);
    if (pod.securityContext?.seccompProfile?.type !== "RuntimeDefault") fail(`${id}: seccompProfile is not RuntimeDefault`);
    if (pod.automountServiceAccountToken !== false) fail(`${id}: automountServiceAccountToken is not false`);
    const volumes = new Map((pod.volumes || []).map((v) => [v.name, v]));
    for (const v of pod.volumes || []) {
      if (v.configMap && !find("ConfigMap", v.configMap.name)) fail(`${id}: volume ${v.name} names a missing ConfigMap ${v.configMap.name}`);
      if (v.secret && !find("Secret", v.secret.secretName)) fail(`${id}: volume ${v.name} names a missing Secret ${v.secret.secretName}`);
      if (v.persistentVolumeClaim && !find("PersistentVolumeClaim", v.persistentVolumeClaim.claimName)) {
        fail(`${id}: volume ${v.name} names a missing PersistentVolumeClaim ${v.persistentVolumeClaim.claimName}`);
      }
    }
    const all = [...(pod.initContainers || []).map((c) => [c, true]), ...pod.containers.map((c) => [c, false])];
    for (const [c, init] of all) {
      const cid = `${id} container ${c.name}`;
      const sc = c.securityContext || {};
      if (sc.readOnlyRootFilesystem !== true) fail(`${cid}: readOnlyRootFilesystem is not true`);
      if (sc.allowPrivilegeEscalation !== false) fail(`${cid}: allowPrivilegeEscalation is not false`);
      if (sc.privileged) fail(`${cid}: privileged`);
      if (!(sc.capabilities?.drop || []).includes("ALL")) fail(`${cid}: capabilities.drop lacks ALL`);
      if (sc.runAsUser === 0) fail(`${cid}: runAsUser 0`);
      if (!c.image || c.image.endsWith(":latest") || !c.image.includes(":")) fail(`${cid}: image '${c.image}' has no pinned tag`);
      const res = c.resources || {};
      for (const r of ["cpu", "memory"]) {
        if (!res.requests?.[r]) fail(`${cid}: no resources.requests.${r}`);
      }
      if (!res.limits?.memory) fail(`${cid}: no resources.limits.memory`);
      const mounts = c.volumeMounts || [];
      for (const m of mounts) {
        if (!volumes.has(m.name)) fail(`${cid}: volumeMount ${m.name} has no volume`);
      }
      const tmp = mounts.find((m) => m.mountPath === "/tmp");
      if (!tmp || !volumes.get(tmp.name)?.emptyDir) fail(`${cid}: /tmp is not an emptyDir (the root filesystem is read-only)`);
      // --flagfile=PATH must be a key of a mounted ConfigMap.
      for (const arg of [...(c.args || []), ...(c.command || [])]) {
        const m = /^--flagfile=(.+)$/.exec(arg);
        if (!m) continue;
        const file = m[1];
        const mount = mounts.find((mt) => file.startsWith(`${mt.mountPath}/`));
        const cmName = mount && volumes.get(mount.name)?.configMap?.name;
        const cm = cmName && find("ConfigMap", cmName);
        const key = mount && file.slice(mount.mountPath.length + 1);
        if (!cm || !(key in (cm.data || {}))) fail(`${cid}: --flagfile=${file} is not a key of a mounted ConfigMap`);
        else if (!/^--[a-z_]+=/m.test(cm.data[key])) fail(`${cid}: ${file} holds no --flag=value line`);
      }
      if (!init) {
        if (!c.readinessProbe) fail(`${cid}: no readinessProbe`);
        if (!c.livenessProbe) fail(`${cid}: no livenessProbe`);
      }
    }
    // Prometheus annotations name a declared container port.
    const ann = d.spec.template.metadata?.annotations || {};
    if (ann["prometheus.io/scrape"] !== "true") fail(`${id}: no prometheus.io/scrape annotation`);
    const ports = pod.containers.flatMap((c) => c.ports || []);
    if (!ports.some((p) => String(p.containerPort) === ann["prometheus.io/port"])) {
      fail(`${id}: prometheus.io/port '${ann["prometheus.io/port"]}' is not a container port`);
    }
  }

  // Inference: native gRPC probes on 50051, PDB, HPA on CPU.
  const inference = find("Deployment", "skinlesion-inference");
  if (inference) {
    const c = inference.spec.template.spec.containers[0];
    for (const probe of ["readinessProbe", "livenessProbe"]) {
      if (c[probe]?.grpc?.port !== 50051) fail(`inference ${probe} is not grpc: {port: 50051}`);
    }
    if (!(inference.spec.replicas >= 2)) fail(`inference replicas ${inference.spec.replicas} < 2`);
    const pdb = byKind("PodDisruptionBudget").find((p) =>
      labelsMatch(p.spec.selector?.matchLabels, inference.spec.template.metadata.labels));
    if (!pdb) fail("no PodDisruptionBudget selects the inference pods");
    const hpa = byKind("HorizontalPodAutoscaler").find((h) =>
      h.spec.scaleTargetRef?.kind === "Deployment" && h.spec.scaleTargetRef?.name === "skinlesion-inference");
    if (!hpa) fail("no HorizontalPodAutoscaler targets Deployment skinlesion-inference");
    else {
      if (!(hpa.spec.metrics || []).some((m) => m.type === "Resource" && m.resource?.name === "cpu")) {
        fail("the inference HorizontalPodAutoscaler does not scale on CPU");
      }
      if (!(hpa.spec.minReplicas >= 2 && hpa.spec.maxReplicas > hpa.spec.minReplicas)) fail("inference HPA min/max replicas");
      if (!c.resources?.requests?.cpu) fail("inference has no CPU request (the HPA's utilisation needs one)");
    }
  }

  // Trainer: a PVC for the registry + job database, one replica, Recreate.
  const trainer = find("Deployment", "skinlesion-trainer");
  if (trainer) {
    const pod = trainer.spec.template.spec;
    const state = (pod.volumes || []).find((v) => v.persistentVolumeClaim);
    if (!state) fail("trainer has no PersistentVolumeClaim volume");
    if (trainer.spec.replicas !== 1 || trainer.spec.strategy?.type !== "Recreate") fail("trainer must be 1 replica with strategy Recreate");
    const mounts = pod.containers[0].volumeMounts || [];
    if (!mounts.some((m) => m.mountPath === "/var/lib/skinlesion" && pod.volumes.find((v) => v.name === m.name)?.persistentVolumeClaim)) {
      fail("trainer's /var/lib/skinlesion (registry + jobs.db) is not on a PersistentVolumeClaim");
    }
  }

  // GPU: requested by the gpu overlay's trainer, by nothing in other overlays.
  const gpuRequests = [];
  for (const d of deployments) {
    for (const c of d.spec.template.spec.containers) {
      const n = c.resources?.limits?.["nvidia.com/gpu"] ?? c.resources?.requests?.["nvidia.com/gpu"];
      if (n !== undefined) gpuRequests.push([d.metadata.name, Number(n), d.spec.template.spec]);
    }
  }
  if (overlay === "gpu") {
    const t = gpuRequests.find(([name]) => name === "skinlesion-trainer");
    if (!t || t[1] !== 1) fail("gpu overlay: the trainer does not request nvidia.com/gpu: 1");
    else {
      if (!t[2].tolerations?.some((x) => x.key === "nvidia.com/gpu")) fail("gpu overlay: trainer has no nvidia.com/gpu toleration");
      if (!t[2].nodeSelector || Object.keys(t[2].nodeSelector).length === 0) fail("gpu overlay: trainer has no nodeSelector");
      const args = t[2].containers[0].args || [];
      if (!args.includes("--device=cuda")) fail("gpu overlay: trainer does not run with --device=cuda");
      if (!t[2].containers[0].image.endsWith("-cuda")) fail("gpu overlay: trainer image is not the CUDA variant");
    }
  } else if (gpuRequests.length > 0) {
    fail(`${overlay} overlay requests nvidia.com/gpu in ${gpuRequests.map((g) => g[0]).join(", ")}`);
  }

  // Services select pods and name declared container ports; the Ingress and the
  // ServiceMonitors name Services and ports that exist.
  for (const s of byKind("Service")) {
    const d = deployments.find((x) => labelsMatch(s.spec.selector, x.spec.template.metadata.labels));
    if (!d) {
      fail(`Service/${s.metadata.name} selects no Deployment's pods`);
      continue;
    }
    const ports = d.spec.template.spec.containers.flatMap((c) => c.ports || []);
    for (const p of s.spec.ports) {
      const ok = typeof p.targetPort === "string" ? ports.some((cp) => cp.name === p.targetPort)
                                                   : ports.some((cp) => cp.containerPort === (p.targetPort ?? p.port));
      if (!ok) fail(`Service/${s.metadata.name} port ${p.name} targets ${p.targetPort}, not a container port`);
    }
  }
  for (const ing of byKind("Ingress")) {
    for (const rule of ing.spec.rules || []) {
      for (const p of rule.http?.paths || []) {
        const svc = find("Service", p.backend.service?.name);
        if (!svc) fail(`Ingress/${ing.metadata.name} backend ${p.backend.service?.name} is not a Service`);
        else if (!svc.spec.ports.some((sp) => sp.name === p.backend.service.port.name || sp.port === p.backend.service.port.number)) {
          fail(`Ingress/${ing.metadata.name} backend port is not a port of Service ${svc.metadata.name}`);
        }
      }
    }
  }
  if (byKind("Ingress").length === 0) fail("no Ingress");
  const monitored = new Set();
  for (const sm of byKind("ServiceMonitor")) {
    const svc = byKind("Service").find((s) => labelsMatch(sm.spec.selector?.matchLabels, s.metadata.labels));
    if (!svc) {
      fail(`ServiceMonitor/${sm.metadata.name} selects no Service`);
      continue;
    }
    monitored.add(svc.metadata.name);
    for (const ep of sm.spec.endpoints || []) {
      if (!svc.spec.ports.some((p) => p.name === ep.port)) fail(`ServiceMonitor/${sm.metadata.name} port ${ep.port} is not a port of ${svc.metadata.name}`);
    }
  }
  for (const name of ["skinlesion-gateway", "skinlesion-inference", "skinlesion-trainer"]) {
    if (!monitored.has(name)) fail(`no ServiceMonitor for Service ${name}`);
  }
  const rules = byKind("PrometheusRule");
  const alerts = rules.flatMap((r) => r.spec.groups.flatMap((g) => g.rules.map((x) => x.alert))).filter(Boolean);
  for (const a of ["SkinlesionTargetDown", "SkinlesionInferenceErrorRate", "SkinlesionInferenceLatencyP99High",
                   "SkinlesionModelReloadFailed", "SkinlesionTrainingJobFailed", "SkinlesionGateway5xxRate"]) {
    if (!alerts.includes(a)) fail(`PrometheusRule lacks alert ${a}`);
  }

  // NetworkPolicies: default deny, then exactly the paths of the issue.
  const policies = byKind("NetworkPolicy");
  const deny = policies.find((p) => Object.keys(p.spec.podSelector || {}).length === 0 &&
    (p.spec.policyTypes || []).includes("Ingress") && !(p.spec.ingress || []).length);
  if (!deny) fail("no default-deny ingress NetworkPolicy (podSelector {}, policyTypes [Ingress], no rules)");
  const podLabels = (name) => find("Deployment", name)?.spec.template.metadata.labels || {};
  // Which peers may reach (deployment, port)? A peer is a deployment name or a
  // namespace name (namespaceSelector on kubernetes.io/metadata.name).
  const allowed = (target, port) => {
    const peers = new Set();
    for (const p of policies) {
      if (Object.keys(p.spec.podSelector?.matchLabels || {}).length === 0) continue;
      if (!labelsMatch(p.spec.podSelector.matchLabels, podLabels(target))) continue;
      for (const rule of p.spec.ingress || []) {
        if (!(rule.ports || []).some((rp) => rp.port === port)) continue;
        if (!rule.from || rule.from.length === 0) peers.add("*");
        for (const from of rule.from || []) {
          if (from.ipBlock) peers.add("*");
          const ns = from.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"];
          if (from.namespaceSelector && !ns) peers.add("*");
          if (ns) peers.add(`namespace:${ns}`);
          else if (from.podSelector) {
            for (const d of deployments) {
              if (labelsMatch(from.podSelector.matchLabels, d.spec.template.metadata.labels)) peers.add(d.metadata.name);
            }
          }
        }
      }
    }
    return [...peers].sort().join(",");
  };
  const expect = [
    ["skinlesion-gateway", 8080, "namespace:ingress-nginx,namespace:monitoring"],
    ["skinlesion-inference", 50051, "skinlesion-gateway"],
    ["skinlesion-inference", 9091, "namespace:monitoring"],
    ["skinlesion-trainer", 50053, "skinlesion-gateway,skinlesion-inference"],
    ["skinlesion-trainer", 9103, "namespace:monitoring"],
  ];
  for (const [target, port, want] of expect) {
    const got = allowed(target, port);
    if (got !== want) fail(`NetworkPolicy: ${target}:${port} is reachable from [${got}], want [${want}]`);
  }

  // The token Secret in git is a placeholder, never a real token.
  const secret = find("Secret", "skinlesion-token");
  if (!secret) fail("no Secret skinlesion-token");
  else {
    const token = secret.stringData?.token ?? (secret.data?.token && Buffer.from(secret.data.token, "base64").toString());
    if (!token || !token.startsWith("REPLACE-ME")) fail("Secret skinlesion-token must hold the REPLACE-ME placeholder in git");
  }

  // The Grafana dashboard ConfigMap is deploy/grafana/skinlesion-dashboard.json.
  const dash = byKind("ConfigMap").find((c) => c.metadata.labels?.grafana_dashboard === "1");
  const file = path.join(repo, "deploy/grafana/skinlesion-dashboard.json");
  if (!dash) fail("no ConfigMap labelled grafana_dashboard=1");
  else if (JSON.stringify(JSON.parse(dash.data?.["skinlesion-dashboard.json"] ?? "null")) !==
           JSON.stringify(JSON.parse(fs.readFileSync(file, "utf8")))) {
    fail("the Grafana ConfigMap differs from deploy/grafana/skinlesion-dashboard.json");
  }
}

for (const overlay of overlays) {
  const text = render(overlay);
  if (text === null) continue;
  const objects = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length) {
      problems.push(`${overlay}: YAML error: ${doc.errors[0].message}`);
      continue;
    }
    const o = doc.toJS();
    if (o) objects.push(o);
  }
  let valid = 0;
  for (const o of objects) {
    const id = `${o.apiVersion} ${o.kind}/${o.metadata?.name}`;
    const Model = await modelClass(o.apiVersion, o.kind);
    if (!Model) {
      problems.push(`${overlay}: no schema for ${id}`);
      continue;
    }
    try {
      new Model(o).validate();
      valid++;
    } catch (error) {
      problems.push(`${overlay}: ${id} is invalid: ${error.message}`);
    }
  }
  checkPolicies(overlay, objects);
  console.log(`${overlay}: ${objects.length} objects, ${valid} valid against the schemas`);
}

if (problems.length) {
  for (const p of problems) console.error(`FAIL ${p}`);
  console.error(`${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`deploy/k8s: ${overlays.join(", ")} render, validate and meet the policies`);
