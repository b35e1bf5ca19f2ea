"""The rules deploy/k8s must keep, beyond what the Kubernetes schemas say.

    deploy-check.py FILE...      check the manifests, print every breach, exit 1 if any
    deploy-check.py --self-test  prove each rule fails on a manifest that breaks it
"""

import sys

import yaml

NAMESPACE = "hopsbridge"
DATA_SERVICES = {"identity", "team", "provisioning", "metering", "billing"}
SERVICES = DATA_SERVICES | {"gateway"}


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def containers(pod_spec):
    return pod_spec.get("initContainers", []) + pod_spec.get("containers", [])


def check(docs):
    """Every breach of the rules, as sentences."""
    errors = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    config = {}
    for cm in by_kind.get("ConfigMap", []):
        config[(cm["metadata"].get("namespace"), cm["metadata"]["name"])] = set(cm.get("data", {}))
    secrets = {}
    for s in by_kind.get("Secret", []):
        keys = set(s.get("stringData", {})) | set(s.get("data", {}))
        secrets[(s["metadata"].get("namespace"), s["metadata"]["name"])] = keys

    def pods():
        for w in workloads:
            yield w, w["spec"]["template"]
        for j in by_kind.get("Job", []):
            yield j, j["spec"]["template"]

    for owner, template in pods():
        where = f'{owner["kind"]} {owner["metadata"]["name"]}'
        ns = owner["metadata"].get("namespace")
        spec = template["spec"]
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            errors.append(f"{where}: pods must run as non-root (securityContext.runAsNonRoot)")
        for c in containers(spec):
            cw = f'{where} container {c["name"]}'
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits", {}).get("memory"):
                errors.append(f"{cw}: needs resource requests and a memory limit")
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("capabilities", {}).get("drop") != ["ALL"]:
                errors.append(f"{cw}: must drop all capabilities and forbid privilege escalation")
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    if r["key"] not in config.get((ns, r["name"]), set()):
                        errors.append(f'{cw}: env {env["name"]} reads ConfigMap {r["name"]} key {r["key"]}, which it lacks')
                if "secretKeyRef" in ref:
                    r = ref["secretKeyRef"]
                    if (ns, r["name"]) in secrets and r["key"] not in secrets[(ns, r["name"])]:
                        errors.append(f'{cw}: env {env["name"]} reads Secret {r["name"]} key {r["key"]}, which it lacks')
                    elif (ns, r["name"]) not in secrets:
                        errors.append(f'{cw}: env {env["name"]} reads Secret {r["name"]}, which no template defines')

    for w in workloads:
        where = f'{w["kind"]} {w["metadata"]["name"]}'
        ns = w["metadata"].get("namespace")
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        for c in w["spec"]["template"]["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    errors.append(f'{where} container {c["name"]}: no {probe}')
        if w["spec"].get("replicas", 1) < 2:
            errors.append(f"{where}: fewer than two replicas")
        if not any(p["metadata"].get("namespace") == ns and labels_match(p["spec"]["selector"].get("matchLabels"), labels)
                   for p in by_kind.get("PodDisruptionBudget", [])):
            errors.append(f"{where}: no PodDisruptionBudget selects its pods")
        if not any(p["metadata"].get("namespace") == ns and p["spec"]["podSelector"].get("matchLabels")
                   and labels_match(p["spec"]["podSelector"]["matchLabels"], labels)
                   for p in by_kind.get("NetworkPolicy", [])):
            errors.append(f"{where}: no NetworkPolicy admits traffic to its pods")

    # Prometheus finds each service's /metrics through its pods' annotations, on a port of its
    # own (http.metrics_port) that no Service exposes.
    for w in workloads:
        if w["metadata"]["name"] not in SERVICES:
            continue
        where = f'{w["kind"]} {w["metadata"]["name"]}'
        annotations = w["spec"]["template"]["metadata"].get("annotations", {})
        port = annotations.get("prometheus.io/port")
        c = w["spec"]["template"]["spec"]["containers"][0]
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        metrics_env = f'HOPSBRIDGE_{w["metadata"]["name"].upper()}__HTTP__METRICS_PORT'
        if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/path") != "/metrics":
            errors.append(f"{where}: pods must carry prometheus.io/scrape \"true\" and prometheus.io/path /metrics")
        if port is None or str(ports.get("metrics")) != port or env.get(metrics_env) != port:
            errors.append(f"{where}: prometheus.io/port, the container port `metrics` and {metrics_env} must agree")
        for s in by_kind.get("Service", []):
            if s["spec"].get("selector") and labels_match(s["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]):
                for sp in s["spec"].get("ports", []):
                    if sp.get("targetPort") in ("metrics", ports.get("metrics")):
                        errors.append(f'Service {s["metadata"]["name"]}: exposes the metrics port')

    names = {w["metadata"]["name"] for w in workloads if w["metadata"].get("namespace") == NAMESPACE}
    for missing in sorted(SERVICES - names):
        errors.append(f"service {missing}: no Deployment in namespace {NAMESPACE}")
    jobs = {j["metadata"]["name"] for j in by_kind.get("Job", [])}
    for svc in sorted(DATA_SERVICES):
        if f"{svc}-migrate" not in jobs:
            errors.append(f"service {svc}: no migration Job {svc}-migrate")
    if not any(d["metadata"].get("namespace") == NAMESPACE and d["spec"]["podSelector"] == {}
               and "Ingress" in d["spec"].get("policyTypes", []) and not d["spec"].get("ingress")
               for d in by_kind.get("NetworkPolicy", [])):
        errors.append(f"namespace {NAMESPACE}: ingress is not denied by default")

    for s in by_kind.get("Service", []):
        sel = s["spec"].get("selector")
        ns = s["metadata"].get("namespace")
        if sel and not any(w["metadata"].get("namespace") == ns and labels_match(sel, w["spec"]["template"]["metadata"]["labels"])
                           for w in workloads):
            errors.append(f'Service {s["metadata"]["name"]}: selects no workload')
    for p in by_kind.get("NetworkPolicy", []):
        ns = p["metadata"].get("namespace")
        for rule in p["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                want = peer.get("podSelector", {}).get("matchLabels")
                if want and "namespaceSelector" not in peer and not any(
                        w["metadata"].get("namespace") == ns and labels_match(want, w["spec"]["template"]["metadata"]["labels"])
                        for w in workloads):
                    errors.append(f'NetworkPolicy {p["metadata"]["name"]}: admits pods {want}, which nothing runs')
    sts = [w for w in by_kind.get("StatefulSet", []) if w["metadata"]["name"] == "nats"]
    if not sts or sts[0]["spec"].get("replicas") != 3:
        errors.append("NATS: JetStream must run as a three-node StatefulSet")
    replicas = [cm.get("data", {}).get("nats.stream_replicas") for cm in by_kind.get("ConfigMap", [])
                if cm["metadata"]["name"] == NAMESPACE]
    if replicas != ["3"]:
        errors.append("ConfigMap hopsbridge: nats.stream_replicas must be 3, one replica per JetStream node")
    return errors


def load(paths):
    docs = []
    for path in paths:
        with open(path) as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    return docs


def self_test():
    """Each breach below, made on a copy of the real manifests, must be reported."""
    import copy
    import glob

    base = load(sorted(glob.glob("deploy/k8s/*.yaml") + glob.glob("deploy/k8s/templates/*.yaml")))
    assert check(base) == [], check(base)

    def breaks(name, mutate):
        docs = copy.deepcopy(base)
        mutate(docs)
        if not check(docs):
            sys.exit(f"self-test: the check did not notice {name}")

    def workload(docs, name):
        return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)

    breaks("a missing readiness probe",
           lambda ds: workload(ds, "billing")["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe"))
    breaks("a missing memory limit",
           lambda ds: workload(ds, "team")["spec"]["template"]["spec"]["containers"][0]["resources"].pop("limits"))
    breaks("a missing PodDisruptionBudget",
           lambda ds: ds.remove(next(d for d in ds if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "metering")))
    breaks("a missing migration Job",
           lambda ds: ds.remove(next(d for d in ds if d["kind"] == "Job" and d["metadata"]["name"] == "identity-migrate")))
    breaks("a ConfigMap key nobody defines",
           lambda ds: next(d for d in ds if d["kind"] == "ConfigMap" and d["metadata"]["name"] == NAMESPACE)["data"].pop("nats.url"))
    breaks("a root pod",
           lambda ds: workload(ds, "gateway")["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot"))
    breaks("a one-node JetStream",
           lambda ds: next(d for d in ds if d["kind"] == "StatefulSet")["spec"].update(replicas=1))
    breaks("a service without its metrics port",
           lambda ds: workload(ds, "metering")["spec"]["template"]["spec"]["containers"][0]["ports"].pop())
    breaks("a service whose pods Prometheus does not scrape",
           lambda ds: workload(ds, "team")["spec"]["template"]["metadata"].pop("annotations"))
    breaks("a Service exposing the metrics port",
           lambda ds: next(d for d in ds if d["kind"] == "Service" and d["metadata"]["name"] == "gateway")["spec"]["ports"]
           .append({"name": "metrics", "port": 9090, "targetPort": "metrics"}))
    print("deploy-check self-test: every rule fails on a manifest that breaks it")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    errors = check(load(sys.argv[1:]))
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"deploy-check: {len(sys.argv) - 1} files keep every rule")


if __name__ == "__main__":
    main()
