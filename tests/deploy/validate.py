#!/usr/bin/env python3
"""Offline validation of deploy/ (run by tests/deploy_manifests.rs).

What it checks, without a cluster, a Docker engine or the network:
  * the Kubernetes manifests: every kustomization (deploy/k8s/base and each
    overlay) is rendered, by a small built-in renderer for the subset of
    kustomize this repository uses, and also by `kubectl kustomize` when
    kubectl is installed (both renderings must agree); every object is
    validated against the OpenAPI schemas vendored in the PyPI package
    `kubernetes-validate`, strictly (unknown fields are errors), for each
    Kubernetes version in K8S_VERSIONS; then cross-object checks (selectors,
    Service ports, Ingress backends, ConfigMap keys behind $(VAR) arguments,
    `serve` flags against src/main.rs, probes, drain timing (`serve` drains
    on SIGTERM for --drain-grace-s $(DRAIN_TIMEOUT_S)), GPU count vs
    --device, security contexts, image tags);
  * deploy/prometheus: YAML, kubernetes_sd_configs, rule files, and every
    streamavatar_* metric named there exists in signaling/metrics.rs;
  * deploy/grafana: dashboard JSON, same metric check, panel ids, datasource;
  * the Dockerfiles: each stage has FROM with an explicit, non-`latest` tag,
    COPY sources exist, the runtime stage runs as a non-root USER, serves
    8080 with a /healthz HEALTHCHECK; CUDA requirement files are hash-pinned;

Exit status: 0 all passed, 1 a check failed, 3 `kubernetes-validate` missing.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

try:
    import yaml
except ImportError:  # PyYAML comes with kubernetes-validate
    yaml = None

try:
    import kubernetes_validate
except ImportError:
    kubernetes_validate = None

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# The oldest Kubernetes we support and the newest the package knows.
K8S_VERSIONS = ["1.30.0", "latest"]
# Secrets created by hand on the cluster (README), never committed.
EXTERNAL_SECRETS = {"coturn-auth", "coturn-tls", "streamavatar-tls", "streamavatar-api-keys"}
AGENT = ("streamavatar", "Deployment", "streamavatar")


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def check(self, name: str, problems: list[str]) -> None:
        if problems:
            self.failed.append(name)
            print(f"FAIL {name}")
            for p in problems:
                print(f"     - {p}")
        else:
            self.passed += 1
            print(f"ok   {name}")

    def skip(self, name: str, why: str) -> None:
        self.skipped.append(name)
        print(f"skip {name}: {why}")


# ---------------------------------------------------------------- kustomize


# Strategic-merge keys of the list fields our patches touch.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
}
SUPPORTED_KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "images", "patches"}


def load_yaml_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def ident(obj: dict) -> tuple[str, str, str]:
    md = obj.get("metadata", {})
    return (md.get("namespace", ""), obj.get("kind", ""), md.get("name", ""))


def list_merge_key(field: str, items: list) -> str | None:
    if field == "ports":
        if any(isinstance(i, dict) and "containerPort" in i for i in items):
            return "containerPort"
        return "port"
    return MERGE_KEYS.get(field)


def strategic_merge(base, patch, field: str = ""):
    """The part of kustomize's strategic merge patch our overlays use:
    maps merge, `null` deletes a key, lists with a merge key merge item by
    item (`$patch: delete` removes one), other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = strip_directives(v)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = list_merge_key(field, base + patch)
        if key is None:
            return strip_directives(patch)
        out = copy.deepcopy(base)
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise ValueError(f"patch item of `{field}` without its merge key `{key}`: {item}")
            idx = next((i for i, b in enumerate(out) if isinstance(b, dict) and b.get(key) == item[key]), None)
            if item.get("$patch") == "delete":
                if idx is None:
                    raise ValueError(f"`$patch: delete` of {field}[{key}={item[key]}] matches nothing")
                out.pop(idx)
            elif idx is None:
                out.append(strip_directives(item))
            else:
                out[idx] = strategic_merge(out[idx], item, field)
        return out
    return strip_directives(patch)


def strip_directives(v):
    if isinstance(v, dict):
        return {k: strip_directives(x) for k, x in v.items() if not k.startswith("$")}
    if isinstance(v, list):
        return [strip_directives(x) for x in v]
    return v


def image_name(image: str) -> str:
    no_digest = image.split("@", 1)[0]
    last = no_digest.rsplit("/", 1)[-1]
    if ":" in last:
        return no_digest[: no_digest.rfind(":")]
    return no_digest


def set_images(obj, rules: list[dict]) -> None:
    if isinstance(obj, dict):
        for field in ("containers", "initContainers"):
            for c in obj.get(field, []) or []:
                for rule in rules:
                    if isinstance(c, dict) and image_name(c.get("image", "")) == rule["name"]:
                        name = rule.get("newName", rule["name"])
                        old = c["image"]
                        tag = old[len(image_name(old)):]
                        if "newTag" in rule:
                            tag = ":" + str(rule["newTag"])
                        if "digest" in rule:
                            tag = "@" + rule["digest"]
                        c["image"] = name + tag
        for v in obj.values():
            set_images(v, rules)
    elif isinstance(obj, list):
        for v in obj:
            set_images(v, rules)


def render(kdir: Path) -> list[dict]:
    kfile = kdir / "kustomization.yaml"
    spec = yaml.safe_load(kfile.read_text())
    unknown = set(spec) - SUPPORTED_KUSTOMIZE_FIELDS
    if unknown:
        raise ValueError(
            f"{kfile}: kustomization fields {sorted(unknown)} are not understood by "
            "tests/deploy/validate.py's renderer; extend it (and keep kubectl kustomize agreeing)"
        )
    objs: list[dict] = []
    for res in spec.get("resources", []):
        p = (kdir / res).resolve()
        objs.extend(render(p) if p.is_dir() else load_yaml_docs(p))
    seen = set()
    for o in objs:
        if ident(o) in seen:
            raise ValueError(f"{kfile}: duplicate object {ident(o)}")
        seen.add(ident(o))
    for entry in spec.get("patches", []):
        if set(entry) != {"path"}:
            raise ValueError(f"{kfile}: only `patches: - path: FILE` entries are supported, got {entry}")
        for patch in load_yaml_docs(kdir / entry["path"]):
            target = ident(patch)
            idx = next((i for i, o in enumerate(objs) if ident(o) == target), None)
            if idx is None:
                raise ValueError(f"{kfile}: patch {entry['path']} targets {target}, which does not exist")
            if patch.get("$patch") == "delete":
                objs.pop(idx)
            else:
                objs[idx] = strategic_merge(objs[idx], patch)
    set_images(objs, spec.get("images", []))
    return objs


def kustomizations() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


# ---------------------------------------------------------------- cross-object checks


def pod_templates(objs):
    for o in objs:
        if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
            yield o, o["spec"]["template"]


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def serve_flags() -> set[str]:
    """Long flags of `streamavatar serve`, read from ServeArgs in src/main.rs."""
    src = (ROOT / "src" / "main.rs").read_text()
    m = re.search(r"pub struct ServeArgs\s*\{(.*?)\n\}", src, re.S)
    if not m:
        raise ValueError("src/main.rs: no `pub struct ServeArgs`")
    flags = set()
    pending_long = None
    for line in m.group(1).splitlines():
        a = re.search(r'long\s*=\s*"([^"]+)"', line)
        if a:
            pending_long = a.group(1)
        f = re.match(r"\s*(?:pub\s+)?(\w+)\s*:", line)
        if f and not line.strip().startswith("//") and not line.strip().startswith("#"):
            flags.add("--" + (pending_long or f.group(1).replace("_", "-")))
            pending_long = None
    return flags


# Value checks of the ingress-nginx annotations used here, after the
# validators of ingress-nginx's annotation parsers (a bad value makes the
# controller ignore the annotation, silently).
NGINX = "nginx.ingress.kubernetes.io/"
NGINX_ANNOTATIONS = {
    "affinity": re.compile(r"^cookie$"),
    "affinity-mode": re.compile(r"^(balanced|persistent)$"),
    "session-cookie-name": re.compile(r"^[A-Za-z0-9_-]+$"),
    "session-cookie-path": re.compile(r"^/[A-Za-z0-9/_.-]*$"),
    "session-cookie-samesite": re.compile(r"^(None|Lax|Strict)$"),
    "session-cookie-max-age": re.compile(r"^\d+$"),
    "session-cookie-change-on-failure": re.compile(r"^(true|false)$"),
    "proxy-next-upstream": re.compile(
        r"^((error|timeout|invalid_header|http_500|http_502|http_503|http_504|http_403|http_404|http_429|non_idempotent|off)\s?)+$"
    ),
    "proxy-next-upstream-tries": re.compile(r"^\d+$"),
    "proxy-body-size": re.compile(r"^\d+[kKmMgG]?$"),
    "proxy-read-timeout": re.compile(r"^\d+$"),
    "proxy-send-timeout": re.compile(r"^\d+$"),
    "upstream-hash-by": re.compile(r"^[A-Za-z0-9_${}-]*$"),
    "denylist-source-range": re.compile(r"^[0-9a-fA-F.:/]+(,[0-9a-fA-F.:/]+)*$"),
}


def ingress_nginx_annotation_problems(objs: list[dict]) -> list[str]:
    problems = []
    for o in objs:
        if o["kind"] != "Ingress":
            continue
        for k, v in o["metadata"].get("annotations", {}).items():
            if not k.startswith(NGINX):
                continue
            rule = NGINX_ANNOTATIONS.get(k[len(NGINX):])
            if rule is None:
                problems.append(f"Ingress {o['metadata']['name']}: annotation {k} is not one this check knows; add its validator")
            elif not rule.match(str(v)):
                problems.append(f"Ingress {o['metadata']['name']}: {k}={v!r} is not a valid value")
    return problems


def check_objects(label: str, objs: list[dict], report: Report) -> None:
    by_id = {ident(o): o for o in objs}
    namespaces = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"}
    configmaps = {(o["metadata"]["namespace"], o["metadata"]["name"]): o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
    pvcs = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs if o["kind"] == "PersistentVolumeClaim"}
    services = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs if o["kind"] == "Service"}
    templates = list(pod_templates(objs))
    flags = serve_flags()

    problems = []
    for o in objs:
        ns = o["metadata"].get("namespace")
        if o["kind"] != "Namespace" and not ns:
            problems.append(f"{o['kind']}/{o['metadata']['name']} has no namespace")
        elif ns and ns not in namespaces:
            problems.append(f"{o['kind']}/{o['metadata']['name']} is in namespace {ns}, which is not defined")
    report.check(f"{label}: namespaces", problems)

    problems = []
    for w, t in templates:
        ns = w["metadata"]["namespace"]
        name = f"{w['kind']}/{w['metadata']['name']}"
        labels = t["metadata"].get("labels", {})
        if not selects(w["spec"]["selector"].get("matchLabels", {}), labels):
            problems.append(f"{name}: selector does not match its pod template labels")
        pod = t["spec"]
        pod_sc = pod.get("securityContext", {})
        for c in pod.get("containers", []):
            cname = f"{name} container {c['name']}"
            image = c.get("image", "")
            tag = image[len(image_name(image)):]
            if not tag or tag == ":latest":
                problems.append(f"{cname}: image {image!r} needs an explicit tag other than latest")
            sc = c.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                problems.append(f"{cname}: runAsNonRoot is not set")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cname}: allowPrivilegeEscalation must be false")
            if "ALL" not in (sc.get("capabilities", {}).get("drop") or []):
                problems.append(f"{cname}: capabilities must drop ALL")
            port_names = {p.get("name") for p in c.get("ports", [])}
            port_numbers = {p.get("containerPort") for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                pr = c.get(probe)
                if not pr:
                    continue
                port = (pr.get("httpGet") or pr.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in port_names:
                    problems.append(f"{cname}: {probe} uses port {port!r}, not a named container port")
                if isinstance(port, int) and port not in port_numbers:
                    problems.append(f"{cname}: {probe} uses port {port}, not a container port")
            env_names = {e["name"] for e in c.get("env", [])}
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef", {}).get("name")
                if ref:
                    if (ns, ref) not in configmaps:
                        problems.append(f"{cname}: envFrom ConfigMap {ref} does not exist")
                    else:
                        env_names |= set(configmaps[(ns, ref)])
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and ref.get("key") not in configmaps.get((ns, ref["name"]), {}):
                    problems.append(f"{cname}: env {e['name']} refers to missing ConfigMap key {ref['name']}/{ref.get('key')}")
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["name"] not in EXTERNAL_SECRETS:
                    problems.append(f"{cname}: env {e['name']} refers to Secret {ref['name']}, not a documented hand-made Secret")
            for arg in c.get("args", []) + c.get("command", []):
                for var in re.findall(r"\$\((\w+)\)", arg):
                    if var not in env_names:
                        problems.append(f"{cname}: argument {arg!r} expands $({var}), which no env/envFrom defines")
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            volumes = {v["name"] for v in pod.get("volumes", [])}
            for m in mounts - volumes:
                problems.append(f"{cname}: volumeMount {m} has no volume")
            if image_name(image).endswith("streamavatar"):
                for arg in c.get("args", []):
                    if arg.startswith("--") and arg.split("=", 1)[0] not in flags:
                        problems.append(f"{cname}: `serve` has no flag {arg} (src/main.rs ServeArgs)")
            ann = t["metadata"].get("annotations", {})
            if ann.get("prometheus.io/scrape") == "true":
                all_ports = {p.get("containerPort") for cc in pod["containers"] for p in cc.get("ports", [])}
                if int(ann.get("prometheus.io/port", "0")) not in all_ports:
                    problems.append(f"{name}: prometheus.io/port {ann.get('prometheus.io/port')} is not a container port")
        for v in pod.get("volumes", []):
            if "persistentVolumeClaim" in v and (ns, v["persistentVolumeClaim"]["claimName"]) not in pvcs:
                problems.append(f"{name}: volume {v['name']} uses a PVC that is not defined")
            if "configMap" in v and (ns, v["configMap"]["name"]) not in configmaps:
                problems.append(f"{name}: volume {v['name']} uses a ConfigMap that is not defined")
            if "secret" in v and v["secret"]["secretName"] not in EXTERNAL_SECRETS:
                problems.append(f"{name}: volume {v['name']} uses Secret {v['secret']['secretName']}, not a documented hand-made Secret")
    report.check(f"{label}: workloads (selectors, ports, probes, env, args, images, security)", problems)

    problems = []
    for (ns, sname), svc in services.items():
        sel = svc["spec"].get("selector", {})
        matching = [t for w, t in templates if w["metadata"]["namespace"] == ns and selects(sel, t["metadata"].get("labels", {}))]
        if not matching:
            problems.append(f"Service {sname}: selector {sel} matches no pod template")
            continue
        names = {p.get("name") for t in matching for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                problems.append(f"Service {sname}: targetPort {p['targetPort']} is not a container port name")
    for o in objs:
        if o["kind"] != "Ingress":
            continue
        ns = o["metadata"]["namespace"]
        for rule in o["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                b = path["backend"]["service"]
                svc = services.get((ns, b["name"]))
                if svc is None:
                    problems.append(f"Ingress {o['metadata']['name']}: backend Service {b['name']} does not exist")
                    continue
                port = b["port"]
                names = {p.get("name") for p in svc["spec"]["ports"]}
                nums = {p.get("port") for p in svc["spec"]["ports"]}
                if ("name" in port and port["name"] not in names) or ("number" in port and port["number"] not in nums):
                    problems.append(f"Ingress {o['metadata']['name']}: Service {b['name']} has no port {port}")
    # ingress-nginx keeps one affinity setting per Service: Ingresses that use
    # affinity on the same Service must agree on it.
    affinity: dict[tuple, dict] = {}
    for o in objs:
        if o["kind"] != "Ingress":
            continue
        ann = o["metadata"].get("annotations", {})
        if "nginx.ingress.kubernetes.io/affinity" not in ann:
            continue
        aff = {k: v for k, v in ann.items() if k.startswith("nginx.ingress.kubernetes.io/") and ("affinity" in k or "session-cookie" in k)}
        for rule in o["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                key = (o["metadata"]["namespace"], path["backend"]["service"]["name"])
                if key in affinity and affinity[key] != aff:
                    problems.append(f"Ingress {o['metadata']['name']}: affinity annotations differ from another Ingress on Service {key[1]}")
                affinity.setdefault(key, aff)
    problems += ingress_nginx_annotation_problems(objs)
    report.check(f"{label}: Services and Ingress routing", problems)

    problems = []
    for o in objs:
        kind, ns = o["kind"], o["metadata"].get("namespace")
        if kind == "HorizontalPodAutoscaler":
            ref = o["spec"]["scaleTargetRef"]
            if (ns, ref["kind"], ref["name"]) not in by_id:
                problems.append(f"HPA {o['metadata']['name']}: target {ref['kind']}/{ref['name']} does not exist")
            if o["spec"]["minReplicas"] > o["spec"]["maxReplicas"]:
                problems.append(f"HPA {o['metadata']['name']}: minReplicas > maxReplicas")
        if kind in ("PodDisruptionBudget",):
            sel = o["spec"]["selector"].get("matchLabels", {})
            if not any(w["metadata"]["namespace"] == ns and selects(sel, t["metadata"].get("labels", {})) for w, t in templates):
                problems.append(f"PDB {o['metadata']['name']}: selector matches no pod template")
        if kind == "NetworkPolicy":
            sel = o["spec"]["podSelector"].get("matchLabels", {})
            if sel and not any(w["metadata"]["namespace"] == ns and selects(sel, t["metadata"].get("labels", {})) for w, t in templates):
                problems.append(f"NetworkPolicy {o['metadata']['name']}: podSelector matches no pod template")
    report.check(f"{label}: HPA, PDB, NetworkPolicy targets", problems)

    problems = []
    agent = by_id.get(AGENT)
    if agent is None:
        problems.append("no Deployment streamavatar/streamavatar")
    else:
        pod = agent["spec"]["template"]["spec"]
        c = next(c for c in pod["containers"] if c["name"] == "streamavatar")
        cfg = next((configmaps.get(("streamavatar", ef["configMapRef"]["name"]), {}) for ef in c.get("envFrom", []) if "configMapRef" in ef), {})
        drain = int(cfg.get("DRAIN_TIMEOUT_S", "0"))
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if drain <= 0:
            problems.append("DRAIN_TIMEOUT_S is not set in the agent's ConfigMap")
        if grace < drain + 30:
            problems.append(f"terminationGracePeriodSeconds {grace} leaves under 30 s after the {drain} s drain")
        args = c.get("args", [])
        if "--drain-grace-s" not in args or args[args.index("--drain-grace-s") + 1 : args.index("--drain-grace-s") + 2] != ["$(DRAIN_TIMEOUT_S)"]:
            problems.append("args do not pass --drain-grace-s $(DRAIN_TIMEOUT_S) (the drain the grace period is sized for)")
        if c.get("lifecycle", {}).get("preStop"):
            problems.append("a preStop hook delays SIGTERM, on which `serve` drains by itself; the grace period would not cover both")
        expected = {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
        for probe, path in expected.items():
            if (c.get(probe) or {}).get("httpGet", {}).get("path") != path:
                problems.append(f"{probe} does not GET {path}")
        gpus = int((c.get("resources", {}).get("limits", {}) or {}).get("nvidia.com/gpu", 0))
        device = cfg.get("STREAMAVATAR_DEVICE", "")
        if device == "cpu":
            if gpus:
                problems.append(f"device cpu but {gpus} GPUs requested")
        else:
            cuda = device.split(",")
            if not all(re.fullmatch(r"cuda:\d+", d) for d in cuda):
                problems.append(f"STREAMAVATAR_DEVICE {device!r} is neither cpu nor cuda:N[,cuda:M]")
            elif gpus != len(cuda) or sorted(int(d[5:]) for d in cuda) != list(range(gpus)):
                problems.append(f"{gpus} GPUs requested but --device {device} (the pod sees its GPUs as cuda:0..cuda:{gpus - 1})")
        if not cfg.get("STREAMAVATAR_MAX_SESSIONS", "").isdigit():
            problems.append("STREAMAVATAR_MAX_SESSIONS is not a whole number")
    report.check(f"{label}: agent pod (drain, probes, GPUs vs --device)", problems)


def validate_schemas(label: str, objs: list[dict], report: Report) -> None:
    for version in K8S_VERSIONS:
        v = kubernetes_validate.latest_version() if version == "latest" else version
        problems = []
        for o in objs:
            try:
                kubernetes_validate.validate(o, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = "/".join(str(p) for p in e.path)
                problems.append(f"{o['kind']}/{o['metadata']['name']}: {where}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(f"{o['kind']}/{o['metadata']['name']}: no schema: {e}")
        report.check(f"{label}: {len(objs)} objects valid for Kubernetes {v} (strict)", problems)


def validator_rejects_bad_manifest(report: Report) -> None:
    """The schemas must really be strict: a typo'd field has to fail."""
    bad = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "i:1", "livenesProbe": {}}]}}},
    }
    try:
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)
        report.check("schema validation rejects an unknown field", ["a Deployment with `livenesProbe` passed"])
    except kubernetes_validate.ValidationError:
        report.check("schema validation rejects an unknown field", [])


def compare_with_kubectl(kdir: Path, mine: list[dict], report: Report) -> None:
    name = f"{kdir.relative_to(ROOT)}: kubectl kustomize agrees with the built-in renderer"
    kubectl = shutil.which("kubectl")
    if not kubectl:
        report.skip(name, "kubectl is not installed")
        return
    try:
        out = subprocess.run([kubectl, "kustomize", str(kdir)], capture_output=True, text=True, timeout=60)
    except (subprocess.TimeoutExpired, OSError) as e:
        report.skip(name, f"kubectl did not run: {e}")
        return
    if out.returncode != 0:
        report.check(name, [f"kubectl kustomize failed: {out.stderr.strip()}"])
        return
    theirs = {ident(o): o for o in yaml.safe_load_all(out.stdout) if o}
    ours = {ident(o): o for o in mine}
    problems = []
    for k in sorted(set(theirs) | set(ours)):
        if k not in theirs:
            problems.append(f"{k} only in the built-in rendering")
        elif k not in ours:
            problems.append(f"{k} only in kubectl's rendering")
        elif theirs[k] != ours[k]:
            problems.append(f"{k} differs between the renderings")
    report.check(name, problems)


# ---------------------------------------------------------------- metrics, Prometheus, Grafana


def known_metrics() -> set[str]:
    """Exposed metric names of signaling/metrics.rs (prefix streamavatar_,
    counters get _total, histograms _bucket/_sum/_count)."""
    src = (ROOT / "signaling" / "metrics.rs").read_text()
    prefix = re.search(r'with_prefix\("([^"]+)"\)', src).group(1)
    struct = re.search(r"pub struct Metrics\s*\{(.*?)\n\}", src, re.S).group(1)
    field_type = dict(re.findall(r"^\s*(\w+):\s*([A-Za-z]+)", struct, re.M))
    names = set()
    for name, field in re.findall(r'registry\.register\(\s*"(\w+)",\s*"[^"]*",\s*m\.(\w+)\.clone\(\)', src, re.S):
        base = f"{prefix}_{name}"
        kind = field_type.get(field, "")
        if kind == "Counter":
            names.add(base + "_total")
        elif kind == "Family":
            inner = re.search(rf"^\s*{field}:\s*Family<[^,]+,\s*(\w+)", struct, re.M).group(1)
            if inner == "Histogram":
                names |= {base + "_bucket", base + "_sum", base + "_count"}
            elif inner == "Counter":
                names.add(base + "_total")
            else:
                names.add(base)
        elif kind == "Histogram":
            names |= {base + "_bucket", base + "_sum", base + "_count"}
        else:
            names.add(base)
    if len(names) < 5:
        raise ValueError(f"signaling/metrics.rs: only {sorted(names)} found; did its layout change?")
    return names


def metric_problems(where: str, expr: str, known: set[str]) -> list[str]:
    used = set(re.findall(r"\bstreamavatar_[a-zA-Z0-9_]+", expr))
    return [f"{where}: metric {m} is not exported by signaling/metrics.rs" for m in sorted(used - known)]


def check_prometheus(report: Report, known: set[str], namespaces: set[str]) -> None:
    pdir = DEPLOY / "prometheus"
    cfg = yaml.safe_load((pdir / "prometheus.yml").read_text())
    problems = []
    jobs = cfg.get("scrape_configs") or []
    if not jobs:
        problems.append("prometheus.yml has no scrape_configs")
    for job in jobs:
        sds = job.get("kubernetes_sd_configs") or []
        if not sds:
            problems.append(f"job {job.get('job_name')}: no kubernetes_sd_configs")
        for sd in sds:
            if sd.get("role") not in ("pod", "endpoints", "endpointslice", "service", "node", "ingress"):
                problems.append(f"job {job.get('job_name')}: unknown role {sd.get('role')}")
            for ns in (sd.get("namespaces") or {}).get("names", []):
                if ns not in namespaces:
                    problems.append(f"job {job.get('job_name')}: namespace {ns} is not in the manifests")
        for rc in job.get("relabel_configs", []):
            if "regex" in rc:
                try:
                    re.compile(rc["regex"])
                except re.error as e:
                    problems.append(f"job {job.get('job_name')}: bad regex {rc['regex']!r}: {e}")
    if "streamavatar" not in {j.get("job_name") for j in jobs}:
        problems.append("no `streamavatar` job")
    for rf in cfg.get("rule_files", []):
        path = pdir / rf
        if not path.is_file():
            problems.append(f"rule file {rf} does not exist")
            continue
        rules = yaml.safe_load(path.read_text())
        for group in rules.get("groups", []):
            for r in group.get("rules", []):
                if not (r.get("alert") or r.get("record")) or not r.get("expr"):
                    problems.append(f"{rf}: rule without alert/record name or expr: {r}")
                    continue
                problems += metric_problems(f"{rf} {r.get('alert') or r.get('record')}", r["expr"], known)
    adapter = yaml.safe_load((pdir / "prometheus-adapter-rules.yaml").read_text())
    for rule in adapter["rules"]["custom"]:
        problems += metric_problems("prometheus-adapter-rules.yaml", rule["seriesQuery"], known)
    report.check("deploy/prometheus: prometheus.yml, alert rules, adapter rules", problems)


def check_hpa_metric(report: Report, objs: list[dict], known: set[str]) -> None:
    problems = []
    for o in objs:
        if o["kind"] == "HorizontalPodAutoscaler":
            for m in o["spec"].get("metrics", []):
                if m["type"] == "Pods":
                    problems += metric_problems(f"HPA {o['metadata']['name']}", m["pods"]["metric"]["name"], known)
    report.check("HPA custom metric is exported by the server", problems)


def check_grafana(report: Report, known: set[str]) -> None:
    problems = []
    for path in sorted((DEPLOY / "grafana").glob("*.json")):
        try:
            dash = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            report.check(f"{path.name}: JSON", [str(e)])
            continue
        for field in ("uid", "title", "panels", "schemaVersion"):
            if field not in dash:
                problems.append(f"{path.name}: no `{field}`")
        variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
        ids = [p.get("id") for p in dash.get("panels", [])]
        if len(ids) != len(set(ids)):
            problems.append(f"{path.name}: duplicate panel ids")
        exprs = []
        for p in dash.get("panels", []):
            if "gridPos" not in p:
                problems.append(f"{path.name}: panel {p.get('title')} has no gridPos")
            ds = (p.get("datasource") or {}).get("uid", "")
            for var in re.findall(r"\$\{?(\w+)", ds):
                if var not in variables:
                    problems.append(f"{path.name}: panel {p.get('title')} uses undefined variable ${var}")
            for t in p.get("targets", []):
                exprs.append(t.get("expr", ""))
                problems += metric_problems(f"{path.name} panel {p.get('title')!r}", t.get("expr", ""), known)
                for var in re.findall(r"\$(\w+)", t.get("expr", "")):
                    if var not in variables and not var.startswith("__"):
                        problems.append(f"{path.name}: panel {p.get('title')} uses undefined variable ${var}")
        joined = "\n".join(exprs)
        for needed in ("streamavatar_sessions_active", "streamavatar_session_fps", "streamavatar_stage_latency_seconds_bucket",
                       "streamavatar_frames_repeated_total", "streamavatar_chunks_skipped_total", "streamavatar_session_talk_queue_ms"):
            if needed not in joined:
                problems.append(f"{path.name}: no panel shows {needed}")
    report.check("deploy/grafana: dashboards parse and use exported metrics", problems)


# ---------------------------------------------------------------- Dockerfiles


def dockerfile_instructions(path: Path) -> list[tuple[int, str, str]]:
    out, buf, start = [], "", 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def lint_dockerfile(path: Path, report: Report) -> None:
    ins = dockerfile_instructions(path)
    problems = []
    args: dict[str, str] = {}
    stages: list[dict] = []
    for n, word, rest in ins:
        if word == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip()
        elif word == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), "<unset " + m.group(1) + ">"), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stage = {"line": n, "image": image, "name": name, "ins": []}
            if image not in {s["name"] for s in stages}:
                if "<unset" in image:
                    problems.append(f"line {n}: FROM {parts[0]} uses an ARG without a default")
                tag = image[len(image_name(image)):]
                if not tag:
                    problems.append(f"line {n}: FROM {image} has no tag")
                elif tag == ":latest":
                    problems.append(f"line {n}: FROM {image} uses the latest tag")
            stages.append(stage)
        elif not stages and word not in ("ARG",):
            problems.append(f"line {n}: {word} before the first FROM")
        else:
            stages[-1]["ins"].append((n, word, rest))
    if not stages:
        problems.append("no FROM")
    names = set()
    for s in stages:
        for n, word, rest in s["ins"]:
            if word == "COPY":
                opts = re.findall(r"--(\w+)=(\S+)", rest)
                srcs = [t for t in rest.split() if not t.startswith("--")][:-1]
                src_stage = dict(opts).get("from")
                if src_stage:
                    if src_stage not in names:
                        problems.append(f"line {n}: COPY --from={src_stage} names no earlier stage")
                else:
                    for src in srcs:
                        if not (ROOT / src).exists():
                            problems.append(f"line {n}: COPY source {src} does not exist in the repository")
        if s["name"]:
            names.add(s["name"])
    final = stages[-1]["ins"] if stages else []
    users = [rest for _, w, rest in final if w == "USER"]
    if not users:
        problems.append("the runtime (last) stage sets no USER")
    elif users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the runtime stage runs as USER {users[-1]}")
    words = {w: rest for _, w, rest in final}
    if "8080" not in words.get("EXPOSE", ""):
        problems.append("the runtime stage does not EXPOSE 8080")
    if "/healthz" not in words.get("HEALTHCHECK", ""):
        problems.append("no HEALTHCHECK on /healthz")
    entry = words.get("ENTRYPOINT", "")
    try:
        entry_list = json.loads(entry)
    except json.JSONDecodeError:
        entry_list = []
        problems.append("ENTRYPOINT is not in exec (JSON) form")
    if entry_list and not ("serve" in entry_list and "--listen" in entry_list and "0.0.0.0:8080" in entry_list):
        problems.append(f"ENTRYPOINT {entry} is not `streamavatar serve --listen 0.0.0.0:8080`")
    if words.get("STOPSIGNAL", "SIGTERM") != "SIGTERM":
        problems.append("STOPSIGNAL is not SIGTERM (what Kubernetes and `docker stop` send; `serve` drains on it)")
    ignore = path.with_name(path.name + ".dockerignore")
    if not ignore.is_file():
        problems.append(f"no {ignore.name} beside it (the build context is the repository root)")
    else:
        patterns = [p.strip() for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")]
        for s in stages:
            for n, word, rest in s["ins"]:
                if word == "COPY" and "--from" not in rest:
                    for src in [t for t in rest.split() if not t.startswith("--")][:-1]:
                        top = src.split("/")[0]
                        if top in patterns:
                            problems.append(f"line {n}: COPY {src} but {ignore.name} excludes {top}")
    report.check(f"{path.relative_to(ROOT)}: lint", problems)


def check_requirements_hashes(report: Report) -> None:
    problems = []
    for path in sorted((DEPLOY / "cuda").glob("requirements-*.txt")):
        text = re.sub(r"\\\n\s*", " ", path.read_text())
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if not re.match(r"^[A-Za-z0-9._-]+==[0-9][^ ]*\s", line + " "):
                problems.append(f"{path.name}: {line.split()[0]} is not pinned with ==")
            if "--hash=sha256:" not in line:
                problems.append(f"{path.name}: {line.split()[0]} has no sha256 hash")
    report.check("deploy/cuda requirement files are pinned and hashed", problems)


# ---------------------------------------------------------------- main


def main() -> int:
    if yaml is None or kubernetes_validate is None:
        print(
            "tests/deploy/validate.py needs the PyPI package `kubernetes-validate` "
            "(it brings PyYAML and the Kubernetes JSON schemas):\n"
            "    python3 -m pip install -r tests/requirements.txt",
            file=sys.stderr,
        )
        return 3
    report = Report()
    t0 = time.monotonic()
    validator_rejects_bad_manifest(report)
    known = known_metrics()
    rendered = {}
    for kdir in kustomizations():
        label = str(kdir.relative_to(ROOT))
        try:
            objs = render(kdir)
        except (ValueError, OSError, yaml.YAMLError) as e:
            report.check(f"{label}: render", [str(e)])
            continue
        rendered[label] = objs
        compare_with_kubectl(kdir, objs, report)
        validate_schemas(label, objs, report)
        check_objects(label, objs, report)
        check_hpa_metric(report, objs, known)
    if "deploy/k8s/base" not in rendered:
        report.check("deploy/k8s/base renders", ["missing"])
    namespaces = {o["metadata"]["name"] for objs in rendered.values() for o in objs if o["kind"] == "Namespace"}
    check_prometheus(report, known, namespaces)
    check_grafana(report, known)
    for df in sorted(DEPLOY.glob("Dockerfile*")):
        if not df.name.endswith(".dockerignore"):
            lint_dockerfile(df, report)
    check_requirements_hashes(report)
    print(
        f"deploy: {report.passed} passed, {len(report.failed)} failed, {len(report.skipped)} skipped"
        f" ({time.monotonic() - t0:.1f} s)"
    )
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
