#!/usr/bin/env python3
"""Assertions on the chart's rendered objects, one scenario at a time.

Usage:
  chart_checks.py render SCENARIO RENDERED.yaml VALUES.yaml   check one `helm template` output
  chart_checks.py differs ANNOTATION A.yaml B.yaml             the pod annotation differs
  chart_checks.py same ANNOTATION A.yaml B.yaml                the pod annotation is equal
  chart_checks.py notes NOTES.txt VALUES.yaml                  NOTES tell pool, logs, metrics
  chart_checks.py schema values.schema.json                     every key typed, described, closed
  chart_checks.py dockerfile Dockerfile                         the image is what the chart expects
  chart_checks.py extract RENDERED.yaml DIR                     write the Secret's and ConfigMap's
                                                                keys into DIR, as the pod sees them
  chart_checks.py observe RENDERED.yaml on|off                  dashboard ConfigMap and PrometheusRule
  chart_checks.py promrules RENDERED.yaml OUT.yaml              the PrometheusRule's groups and every
                                                                dashboard query as a rules file for
                                                                `promtool check rules`

Prints one line per failed assertion and exits 1 when any failed.
"""

import base64
import sys

import yaml

RELEASE_NS = "runner-provisioner"

# Exactly the verbs the code uses, (group, resource) -> verbs; nothing else may be granted, so a
# verb added to the chart fails here. Server-side apply is `patch`, plus `create` when the object
# does not exist yet; `/scale` is set with a replace (`update`).
VM_RULES = {
    # the pools' user-data and proxy Secrets: applied, and read back (metadata) to re-create a
    # deleted one. No list/watch: the pod must not be able to read every Secret.
    ("", "secrets"): {"get", "create", "patch"},
    # get, apply (create/patch), the drain mark (merge patch); list for scale-to-zero
    ("pool.kubevirt.io", "virtualmachinepools"): {"get", "list", "create", "patch"},
    ("pool.kubevirt.io", "virtualmachinepools/scale"): {"update"},
    # the VM cache is a reflector (list/watch); get before a delete; patch drops the finalizer
    ("kubevirt.io", "virtualmachines"): {"get", "list", "watch", "patch", "delete"},
}
LEADER_RULES = {
    # kube-lease-manager: get, create, and patch to acquire, renew and release
    ("coordination.k8s.io", "leases"): {"get", "create", "patch"},
    # kube-runtime's Recorder writes events.k8s.io/v1 Events: create, patch for a series
    ("events.k8s.io", "events"): {"create", "patch"},
}

# What each scenario must render. fullname: the release is called runner-provisioner.
SCENARIOS = {
    "seed": dict(shape="seed", secret=None, configmap=None, vm_ns=RELEASE_NS, replicas=1),
    "seed-server": dict(shape="seed", secret=None, configmap=None, vm_ns=RELEASE_NS, replicas=1,
                        api_addr="https://your-server-hostname"),
    "seed-existing-secret": dict(shape="seed", secret="my-secret", configmap=None, vm_ns=RELEASE_NS,
                                 replicas=1),
    "v012": dict(shape="v012", secret=None, configmap=None, vm_ns=RELEASE_NS, replicas=1,
                 image="registry.example.com/runner-provisioner@sha256:"
                       "0f3ae2bd5cbbd7d41a0a13e9d4b1d7ab0b3c4e3f6b1a7e2c9d8f0a1b2c3d4e5f"),
    "v012-existing-secret": dict(shape="v012", secret="runner-secrets", configmap=None,
                                 vm_ns=RELEASE_NS, replicas=1),
    "v012-existing": dict(shape="v012", secret="runner-secrets", configmap="runner-config",
                          vm_ns="runner-vms", replicas=1,
                          api_addr_env="https://circleci.internal.example.com"),
    "ha": dict(shape="v012", secret=None, configmap=None, vm_ns=RELEASE_NS, replicas=3, pdb=True,
               service_monitor=True, metrics_port=9191),
    "sidecar": dict(shape="v012", secret=None, configmap=None, vm_ns="runner-vms", replicas=2,
                    bundle_image="registry.example.com/runner-bundle@sha256:"
                                 "0f3ae2bd5cbbd7d41a0a13e9d4b1d7ab0b3c4e3f6b1a7e2c9d8f0a1b2c3d4e5f",
                    bundle_pull_secret="bundle-pull"),
    "sidecar-cert-manager": dict(shape="v012", secret=None, configmap=None, vm_ns=RELEASE_NS,
                                 replicas=1, cert_manager=True),
}
# The sidecar's and the bundle's defaults when a scenario does not turn them off.
DEFAULT_BUNDLE_IMAGE = "ghcr.io/runner-provisioner/runner-bundle:0.2.0"
CLUSTER_SCOPED = ("MutatingWebhookConfiguration",)
FULLNAME = "runner-provisioner"
INJECTOR = f"{FULLNAME}-sidecar-injector"


class Checker:
    def __init__(self, label):
        self.label = label
        self.failures = []

    def check(self, cond, message):
        if not cond:
            self.failures.append(message)
        return cond

    def finish(self):
        for f in self.failures:
            print(f"FAIL [{self.label}] {f}")
        return 1 if self.failures else 0


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load_raw_docs(path):
    """Each rendered object's YAML text with its parsed form."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = []
    for chunk in text.split("\n---"):
        doc = yaml.safe_load(chunk)
        if doc:
            out.append((chunk, doc))
    return out


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(c, docs, kind):
    found = by_kind(docs, kind)
    c.check(len(found) == 1, f"expected exactly one {kind}, found {len(found)}")
    return found[0] if found else {}


def env_map(container):
    return {e["name"]: e for e in container.get("env", [])}


def secret_strings(values):
    """Every token and userData the values hold: none may leave the Secret."""
    p = values.get("provisioner", {}) or {}
    out = []
    if p.get("circleToken"):
        out.append(p["circleToken"])
    rc = p.get("resourceClass") or {}
    if rc.get("token"):
        out.append(rc["token"])
    defaults = p.get("resourceClassDefaults") or {}
    if defaults.get("userData"):
        out.append(defaults["userData"])
    for cls in (p.get("resourceClasses") or {}).values():
        for key in ("token", "userData"):
            if (cls or {}).get(key):
                out.append(cls[key])
    return out


def string_leaves(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from string_leaves(v)
    elif isinstance(node, list):
        for v in node:
            yield from string_leaves(v)


def check_pod_security(c, what, pod_spec, container):
    psc = pod_spec.get("securityContext", {})
    csc = container.get("securityContext", {})
    c.check(psc.get("runAsNonRoot") is True, f"{what}: pod runAsNonRoot is not true")
    c.check(psc.get("runAsUser") == 65534 and csc.get("runAsUser", 65534) == 65534,
            f"{what}: does not run as UID 65534")
    c.check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
            f"{what}: seccompProfile is not RuntimeDefault")
    c.check(csc.get("readOnlyRootFilesystem") is True, f"{what}: root filesystem is writable")
    c.check(csc.get("allowPrivilegeEscalation") is False, f"{what}: privilege escalation allowed")
    c.check((csc.get("capabilities") or {}).get("drop") == ["ALL"],
            f"{what}: capabilities.drop is not [ALL]")
    c.check(not csc.get("privileged"), f"{what}: privileged")
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    tmp = mounts.get("/tmp")
    c.check(tmp is not None and "emptyDir" in volumes.get(tmp["name"], {}),
            f"{what}: /tmp is not a writable emptyDir")


def check_config_volumes(c, what, pod_spec, container, exp):
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    secret_name = exp["secret"] or FULLNAME
    cfg = mounts.get("/etc/runner-provisioner")
    c.check(cfg is not None and cfg.get("readOnly") is True and "subPath" not in cfg,
            f"{what}: config is not a read-only directory mount at /etc/runner-provisioner")
    if cfg is None:
        return
    vol = volumes.get(cfg["name"], {})
    if exp["shape"] == "seed":
        c.check(vol.get("secret", {}).get("secretName") == secret_name,
                f"{what}: seed config.yaml does not come from Secret {secret_name}: {vol}")
        c.check(vol.get("secret", {}).get("items") == [{"key": "config.yaml", "path": "config.yaml"},
                                                       {"key": "circle-token", "path": "circle-token"}],
                f"{what}: seed Secret keys config.yaml and circle-token are not mounted side by side")
        c.check("/etc/runner-provisioner-secrets" not in mounts,
                f"{what}: the seed shape has no secrets.yaml to mount")
    else:
        cm_name = exp["configmap"] or FULLNAME
        c.check(vol.get("configMap", {}).get("name") == cm_name,
                f"{what}: config.yaml does not come from ConfigMap {cm_name}: {vol}")
        sec = mounts.get("/etc/runner-provisioner-secrets")
        c.check(sec is not None and sec.get("readOnly") is True,
                f"{what}: secrets are not mounted read-only at /etc/runner-provisioner-secrets")
        if sec:
            svol = volumes.get(sec["name"], {})
            c.check(svol.get("secret", {}).get("secretName") == secret_name
                    and svol["secret"].get("items") == [{"key": "secrets.yaml", "path": "secrets.yaml"},
                                                        {"key": "circle-token", "path": "circle-token"}],
                    f"{what}: secrets.yaml and circle-token do not come from Secret {secret_name}: {svol}")


def check_rbac(c, docs, exp):
    c.check(not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding"),
            "RBAC must be namespaced only, found a ClusterRole/ClusterRoleBinding")
    granted = {}
    roles = {}
    for role in by_kind(docs, "Role"):
        ns = role["metadata"]["namespace"]
        roles[(ns, role["metadata"]["name"])] = role
        for rule in role.get("rules", []):
            c.check("resourceNames" not in rule or rule["resourceNames"], "empty resourceNames")
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    key = (ns, group, res)
                    c.check(key not in granted, f"rule for {key} is granted twice")
                    granted[key] = set(rule["verbs"])
                    c.check("*" not in rule["verbs"] and res != "*" and group != "*",
                            f"wildcard in rule {rule}")
    vm_ns = exp["vm_ns"]
    want = {}
    # Everything lives in the VM namespace: the release namespace gets nothing.
    for rules in (VM_RULES, LEADER_RULES):
        for (g, r), verbs in rules.items():
            want[(vm_ns, g, r)] = verbs
    c.check(granted == want, "RBAC differs from the verbs the code uses:\n"
            + "".join(f"    extra   {k}: {sorted(v)}\n" for k, v in granted.items() if want.get(k) != v)
            + "".join(f"    missing {k}: {sorted(v)}\n" for k, v in want.items() if granted.get(k) != v))
    bindings = by_kind(docs, "RoleBinding")
    c.check(len(bindings) == len(roles), "every Role needs exactly one RoleBinding")
    for b in bindings:
        ns = b["metadata"]["namespace"]
        c.check((ns, b["roleRef"]["name"]) in roles and b["roleRef"]["kind"] == "Role",
                f"RoleBinding {ns}/{b['metadata']['name']} refers to a missing Role")
        c.check(b["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NS}],
                f"RoleBinding {ns}/{b['metadata']['name']} does not bind only the provisioner's ServiceAccount")


def merged(base, override):
    """Helm's values merge: maps merge key by key, anything else replaces, null deletes."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    out = dict(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merged(base.get(k), v)
    return out


def chart_defaults():
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chart", "values.yaml")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def check_openssl(c, ca_pem, cert_pem, dns_name):
    """The generated certificate is signed by the CA in the webhook configuration and names the
    Service as the API server calls it."""
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ca, cert = os.path.join(d, "ca.crt"), os.path.join(d, "tls.crt")
        with open(ca, "w", encoding="utf-8") as f:
            f.write(ca_pem)
        with open(cert, "w", encoding="utf-8") as f:
            f.write(cert_pem)
        verify = subprocess.run(["openssl", "verify", "-CAfile", ca, cert], capture_output=True, text=True)
        c.check(verify.returncode == 0, f"tls.crt is not signed by ca.crt: {verify.stdout}{verify.stderr}")
        text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", cert],
                              capture_output=True, text=True).stdout
        c.check(f"DNS:{dns_name}" in text, f"tls.crt does not name {dns_name}")


def check_sidecar(c, docs, values, exp, ctr, spec, parsed_config):
    """The webhook configuration, its Service, its TLS and the pod's webhook port agree; with the
    sidecar off none of it is rendered."""
    enabled = values["sidecar"]["enabled"]
    webhooks = by_kind(docs, "MutatingWebhookConfiguration")
    services = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}
    env = env_map(ctr)
    ports = {p_["name"]: p_["containerPort"] for p_ in ctr.get("ports", [])}
    if parsed_config is not None:
        c.check((parsed_config.get("sidecar") or {}).get("enabled") is enabled,
                f"config.yaml sidecar.enabled is not {enabled}: {parsed_config.get('sidecar')}")
    if not enabled:
        c.check(not webhooks and INJECTOR not in services and "webhook" not in ports
                and "WEBHOOK_PORT" not in env, "sidecar objects rendered although sidecar.enabled is false")
        return
    if not c.check(len(webhooks) == 1, f"expected one MutatingWebhookConfiguration, found {len(webhooks)}"):
        return
    mwc = webhooks[0]
    c.check(mwc["metadata"]["name"] == INJECTOR, f"webhook configuration name {mwc['metadata']['name']}")
    c.check(len(mwc["webhooks"]) == 1, "one webhook expected")
    wh = mwc["webhooks"][0]
    c.check(wh.get("sideEffects") == "None" and wh.get("admissionReviewVersions") == ["v1"],
            "webhook must be side-effect free and speak AdmissionReview v1")
    c.check(wh["clientConfig"].get("service") == {"name": INJECTOR, "namespace": RELEASE_NS,
                                                  "path": "/mutate-pods", "port": 443},
            f"webhook service reference {wh['clientConfig'].get('service')}")
    c.check(wh.get("rules") == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                 "resources": ["pods"], "scope": "Namespaced"}],
            f"webhook rules {wh.get('rules')}: only pod creation")
    c.check(wh.get("namespaceSelector") == {"matchLabels": {"kubernetes.io/metadata.name": exp["vm_ns"]}},
            f"webhook namespaceSelector {wh.get('namespaceSelector')} is not the VM namespace")
    c.check(wh.get("objectSelector") == {"matchLabels": {
        "kubevirt.io": "virt-launcher", "app.kubernetes.io/managed-by": "runner-provisioner",
        "runner-provisioner/token-proxy": "true"}},
        f"webhook objectSelector {wh.get('objectSelector')} would touch pods other than our pools'")
    svc = services.get(INJECTOR)
    if c.check(svc is not None, "the webhook Service is missing"):
        c.check(svc["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook",
                                          "protocol": "TCP"}], f"webhook Service ports {svc['spec']['ports']}")
        c.check(svc["spec"]["selector"] == {"app.kubernetes.io/name": "runner-provisioner",
                                            "app.kubernetes.io/instance": "runner-provisioner"},
                "the webhook Service does not select every provisioner pod")
    port = values["sidecar"]["port"]
    c.check(ports.get("webhook") == port, f"container port webhook is {ports.get('webhook')}, not {port}")
    c.check(env.get("WEBHOOK_PORT", {}).get("value") == str(port), "WEBHOOK_PORT")
    c.check(env.get("SIDECAR_IMAGE", {}).get("value") == ctr["image"],
            "the injected proxy must run the controller's own image (SIDECAR_IMAGE)")
    cert_dir = env.get("WEBHOOK_CERT_DIR", {}).get("value")
    mounts = {m["mountPath"]: m for m in ctr.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mount = mounts.get(cert_dir)
    tls_name = f"{INJECTOR}-tls"
    c.check(mount is not None and mount.get("readOnly") is True
            and volumes.get(mount["name"], {}).get("secret", {}).get("secretName") == tls_name,
            f"the webhook certificate Secret {tls_name} is not mounted read-only at WEBHOOK_CERT_DIR")
    tls = [d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == tls_name]
    dns = f"{INJECTOR}.{RELEASE_NS}.svc"
    if exp.get("cert_manager"):
        c.check(not tls, "a TLS Secret is rendered although cert-manager writes it")
        c.check(not wh["clientConfig"].get("caBundle"), "caBundle set although cert-manager injects it")
        c.check((mwc["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from")
                == f"{RELEASE_NS}/{INJECTOR}", "cert-manager.io/inject-ca-from is missing or wrong")
        certs = by_kind(docs, "Certificate")
        if c.check(len(certs) == 1, "expected one cert-manager Certificate"):
            cs = certs[0]["spec"]
            c.check(cs.get("secretName") == tls_name, "Certificate secretName")
            c.check(dns in cs.get("dnsNames", []), f"Certificate dnsNames lack {dns}")
            ref = values["sidecar"]["certManager"].get("issuerRef") or {}
            want = {"name": ref.get("name") or f"{INJECTOR}-selfsigned", "kind": ref.get("kind") or "Issuer",
                    "group": ref.get("group") or "cert-manager.io"}
            c.check(cs.get("issuerRef") == want, f"Certificate issuerRef {cs.get('issuerRef')} != {want}")
            c.check(bool(by_kind(docs, "Issuer")) == (not ref.get("name")),
                    "a self-signed Issuer is rendered exactly when no issuerRef is given")
    else:
        if c.check(len(tls) == 1 and tls[0].get("type") == "kubernetes.io/tls",
                   f"expected the generated kubernetes.io/tls Secret {tls_name}"):
            data = {k: base64.b64decode(v).decode() for k, v in tls[0]["data"].items()}
            c.check(set(data) == {"ca.crt", "tls.crt", "tls.key"}, f"TLS Secret keys {sorted(data)}")
            c.check(wh["clientConfig"].get("caBundle") == tls[0]["data"].get("ca.crt"),
                    "caBundle is not the generated CA")
            check_openssl(c, data.get("ca.crt", ""), data.get("tls.crt", ""), dns)


def check_bundle(c, values, exp, parsed_config):
    if parsed_config is None:
        return
    bundle = values["runnerBundle"]
    got = parsed_config.get("runnerBundle")
    if not bundle["enabled"]:
        c.check(got is None, f"config.yaml has runnerBundle although it is disabled: {got}")
        return
    want = {"image": exp.get("bundle_image", DEFAULT_BUNDLE_IMAGE), "pullPolicy": bundle["image"]["pullPolicy"]}
    if exp.get("bundle_pull_secret"):
        want["imagePullSecret"] = exp["bundle_pull_secret"]
    c.check(got == want, f"config.yaml runnerBundle {got} != {want}")


def check_render(scenario, rendered, values_path):
    c = Checker(scenario)
    exp = SCENARIOS[scenario]
    with open(values_path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    effective = merged(chart_defaults(), values)
    raw = load_raw_docs(rendered)
    docs = [d for _, d in raw]

    for d in docs:
        if d["kind"] not in ("Role", "RoleBinding") + CLUSTER_SCOPED:
            c.check(d["metadata"].get("namespace") == RELEASE_NS,
                    f"{d['kind']} {d['metadata']['name']} is not in the release namespace")

    # Tokens and user data appear only inside Secrets, and are really in the Secret.
    secret_values = []
    for text, d in raw:
        if d["kind"] == "Secret":
            for v in d.get("data", {}).values():
                decoded = base64.b64decode(v).decode()
                secret_values.append(decoded)
                secret_values.extend(string_leaves(yaml.safe_load(decoded)))
    for s in secret_strings(values):
        for text, d in raw:
            if d["kind"] != "Secret":
                c.check(s not in text, f"a token or userData from the values appears in {d['kind']} "
                                       f"{d['metadata']['name']}")
        if not exp["secret"]:
            c.check(s in secret_values, "a token or userData from the values is missing from the Secret")

    # Secret and ConfigMap: rendered unless existing ones are named.
    secrets = [d for d in by_kind(docs, "Secret") if d.get("type") != "kubernetes.io/tls"]
    configmaps = by_kind(docs, "ConfigMap")
    parsed_config = None
    if exp["secret"]:
        c.check(not secrets, f"a Secret is rendered although existingSecret {exp['secret']} is named")
    elif c.check(len(secrets) == 1, f"expected one Secret, found {len(secrets)}"):
        data = {k: base64.b64decode(v).decode() for k, v in secrets[0].get("data", {}).items()}
        want_keys = {"circle-token", "config.yaml" if exp["shape"] == "seed" else "secrets.yaml"}
        c.check(set(data) == want_keys, f"Secret keys {sorted(data)} != {sorted(want_keys)}")
        c.check(data.get("circle-token") == values["provisioner"]["circleToken"],
                "Secret circle-token is not provisioner.circleToken")
        if exp["shape"] == "seed":
            parsed_config = yaml.safe_load(data.get("config.yaml", "{}"))
        else:
            sec = yaml.safe_load(data.get("secrets.yaml", "{}"))
            classes = values["provisioner"]["resourceClasses"]
            c.check(set(sec.get("resourceClasses", {})) == set(classes),
                    "secrets.yaml does not list every class")
            default_ud = (values["provisioner"].get("resourceClassDefaults") or {}).get("userData")
            for name, cls in classes.items():
                entry = sec["resourceClasses"].get(name, {})
                c.check(entry.get("token") == cls["token"], f"secrets.yaml token of {name} is wrong")
                c.check(entry.get("userData") == (cls.get("userData") or default_ud),
                        f"secrets.yaml userData of {name} is not its own or the defaults'")
    if exp["shape"] == "seed" or exp["configmap"]:
        c.check(not configmaps, "a ConfigMap is rendered although the config comes from elsewhere")
    elif c.check(len(configmaps) == 1, f"expected one ConfigMap, found {len(configmaps)}"):
        parsed_config = yaml.safe_load(configmaps[0]["data"]["config.yaml"])

    p = values.get("provisioner", {})
    if parsed_config is not None and exp["shape"] == "seed":
        rc = p["resourceClass"]
        cls = parsed_config.get("resourceClass", {}).get(rc["name"])
        c.check(cls is not None and list(parsed_config["resourceClass"]) == [rc["name"]],
                f"config.yaml resourceClass is not keyed by {rc['name']}: {parsed_config}")
        cls = cls or {}
        c.check(cls.get("token") == rc["token"], "seed config.yaml lost the class token")
        c.check(cls.get("minReplicas") == rc.get("minReplicas", 3)
                and cls.get("maxReplicas") == rc.get("maxReplicas", 10),
                "seed config.yaml min/max differ from the values (defaults 3 and 10)")
        disk = ((cls.get("spec") or {}).get("volumes") or [{}])[0].get("containerDisk", {})
        c.check(disk.get("image") == "quay.io/containerdisks/ubuntu:22.04"
                and cls["spec"]["domain"]["resources"]["requests"] == {"memory": "2Gi", "cpu": "1"},
                "seed config.yaml does not carry the default Ubuntu 22.04 / 2Gi / 1 CPU spec")
        c.check(parsed_config.get("circleciAPIAddr") == exp.get("api_addr", "https://runner.circleci.com/"),
                f"circleciAPIAddr is {parsed_config.get('circleciAPIAddr')}")
    if parsed_config is not None and exp["shape"] == "v012":
        c.check(set(parsed_config["resourceClasses"]) == set(p["resourceClasses"]),
                "config.yaml does not list every class")
        for name, cls in parsed_config["resourceClasses"].items():
            c.check("token" not in cls and "userData" not in cls,
                    f"config.yaml (a ConfigMap) holds a token or userData of {name}")
            want = {k: v for k, v in p["resourceClasses"][name].items() if k not in ("token", "userData")}
            c.check(cls == want, f"config.yaml class {name} differs from the values")
        want_defaults = {k: v for k, v in (effective["provisioner"].get("resourceClassDefaults") or {}).items()
                         if k != "userData"}
        c.check(parsed_config.get("resourceClassDefaults") == want_defaults,
                "config.yaml resourceClassDefaults differ from the values")

    # Deployment.
    dep = one(c, docs, "Deployment")
    if not dep:
        return c.finish()
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    c.check(dep["spec"]["replicas"] == exp["replicas"], f"replicas {dep['spec']['replicas']}")
    containers = spec["containers"]
    c.check(len(containers) == 1, "the pod should have one container")
    ctr = containers[0]
    image = exp.get("image", "ghcr.io/runner-provisioner/runner-provisioner:0.2.0")
    c.check(ctr["image"] == image, f"image {ctr['image']} != {image}")
    c.check(ctr.get("args") == ["run"], f"container args {ctr.get('args')} != ['run']")
    c.check(spec.get("automountServiceAccountToken") is True, "automountServiceAccountToken is not true")
    c.check(spec.get("serviceAccountName") == FULLNAME, "wrong serviceAccountName")
    c.check(spec.get("imagePullSecrets") == values.get("imagePullSecrets", [{"name": "regcred"}]),
            f"imagePullSecrets {spec.get('imagePullSecrets')}")
    check_pod_security(c, "Deployment", spec, ctr)
    check_config_volumes(c, "Deployment", spec, ctr, exp)

    ports = {p_["name"]: p_["containerPort"] for p_ in ctr.get("ports", [])}
    metrics_port = exp.get("metrics_port", 9090)
    want_ports = {"ready": 8000, "live": 8001, "metrics": metrics_port}
    if effective["sidecar"]["enabled"]:
        want_ports["webhook"] = effective["sidecar"]["port"]
    c.check(ports == want_ports, f"container ports {ports}")
    for probe, path, port in (("readinessProbe", "/ready", 8000), ("livenessProbe", "/live", 8001)):
        get = (ctr.get(probe) or {}).get("httpGet", {})
        resolved = ports.get(get.get("port"), get.get("port"))
        c.check(get.get("path") == path and resolved == port,
                f"{probe} is not GET {path} on {port}: {get}")

    env = env_map(ctr)
    for name, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        c.check(env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == field,
                f"{name} is not from the downward API ({field})")
    # The API token is the mounted file `circle-token` (hot-reloaded); an environment variable
    # would be read once and win over nothing, or pin the old token after a rotation.
    c.check("CIRCLE_TOKEN" not in env, f"CIRCLE_TOKEN is set in the env: {env.get('CIRCLE_TOKEN')}")
    c.check(env.get("PROVISIONER_NAMESPACE", {}).get("value") == exp["vm_ns"],
            f"PROVISIONER_NAMESPACE {env.get('PROVISIONER_NAMESPACE')}")
    c.check(env.get("PROVISIONER_CONFIG", {}).get("value") == "/etc/runner-provisioner/config.yaml",
            "PROVISIONER_CONFIG is not the mounted config.yaml")
    if exp["shape"] == "v012":
        c.check(env.get("PROVISIONER_SECRETS", {}).get("value")
                == "/etc/runner-provisioner-secrets/secrets.yaml", "PROVISIONER_SECRETS is not set")
    c.check(env.get("METRICS_PORT", {}).get("value") == str(metrics_port), "METRICS_PORT")
    leader = exp["replicas"] > 1
    c.check(env.get("LEADER_ELECTION", {}).get("value") == ("true" if leader else "false"),
            f"LEADER_ELECTION {env.get('LEADER_ELECTION')} with {exp['replicas']} replicas")
    c.check(env.get("LEASE_NAME", {}).get("value") == f"{FULLNAME}-leader", "LEASE_NAME")
    c.check(env.get("LOG_LEVEL", {}).get("value") == values.get("logLevel", "info"), "LOG_LEVEL")
    if "api_addr_env" in exp:
        c.check(env.get("CIRCLECI_API_ADDR", {}).get("value") == exp["api_addr_env"],
                "CIRCLECI_API_ADDR is not passed on with an external config")
    else:
        c.check("CIRCLECI_API_ADDR" not in env, "CIRCLECI_API_ADDR set although the config carries it")
    for extra in values.get("extraEnv", []):
        c.check(env.get(extra["name"]) == extra, f"extraEnv {extra['name']} is missing")
    strategy = dep["spec"]["strategy"]["type"]
    c.check(strategy == ("RollingUpdate" if leader else "Recreate"),
            f"strategy {strategy}: without leader election two pods must never overlap")
    for key in ("priorityClassName", "topologySpreadConstraints", "nodeSelector", "tolerations", "affinity"):
        if values.get(key):
            c.check(spec.get(key) == values[key], f"{key} is not passed to the pod")

    annotations = pod["metadata"].get("annotations") or {}
    want_config = not exp["secret"] if exp["shape"] == "seed" else not exp["configmap"]
    want_secret = not exp["secret"]
    c.check(("checksum/config" in annotations) == want_config,
            f"checksum/config present={'checksum/config' in annotations}, expected {want_config}")
    c.check(("checksum/secret" in annotations) == want_secret,
            f"checksum/secret present={'checksum/secret' in annotations}, expected {want_secret}")
    for key in ("checksum/config", "checksum/secret"):
        if key in annotations:
            v = annotations[key]
            c.check(len(v) == 64 and all(ch in "0123456789abcdef" for ch in v), f"{key} is not a sha256")

    # Selector, Service, PDB, ServiceMonitor.
    labels = pod["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    c.check(all(labels.get(k) == v for k, v in selector.items()), "selector does not match the pod")
    metrics_svcs = [d for d in by_kind(docs, "Service") if d["metadata"]["name"] == f"{FULLNAME}-metrics"]
    c.check(len(metrics_svcs) == 1, "the metrics Service is missing")
    svc = metrics_svcs[0] if metrics_svcs else {}
    if svc:
        c.check(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
                "Service selector does not match the pod")
        c.check([(p_["name"], p_["port"], p_["targetPort"]) for p_ in svc["spec"]["ports"]]
                == [("metrics", metrics_port, "metrics")], f"Service ports {svc['spec']['ports']}")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    if exp.get("pdb"):
        c.check(len(pdbs) == 1 and pdbs[0]["spec"]["selector"]["matchLabels"] == selector,
                "PodDisruptionBudget missing or not selecting the pods")
    else:
        c.check(not pdbs, "PodDisruptionBudget rendered although disabled")
    sms = by_kind(docs, "ServiceMonitor")
    if exp.get("service_monitor"):
        if c.check(len(sms) == 1, "ServiceMonitor missing"):
            sm = sms[0]
            c.check(all(svc["metadata"]["labels"].get(k) == v
                        for k, v in sm["spec"]["selector"]["matchLabels"].items()),
                    "ServiceMonitor does not select the metrics Service")
            c.check(sm["spec"]["endpoints"][0]["port"] == "metrics", "ServiceMonitor port")
            want_labels = values["metrics"]["serviceMonitor"].get("labels", {})
            c.check(all(sm["metadata"]["labels"].get(k) == v for k, v in want_labels.items()),
                    "ServiceMonitor lacks metrics.serviceMonitor.labels")
    else:
        c.check(not sms, "ServiceMonitor rendered although disabled")

    check_sidecar(c, docs, effective, exp, ctr, spec, parsed_config)
    check_bundle(c, effective, exp, parsed_config)

    sas = by_kind(docs, "ServiceAccount")
    c.check([s["metadata"]["name"] for s in sas] == [FULLNAME], "ServiceAccount missing")
    check_rbac(c, docs, exp)

    # The pre-delete hook: same image and ServiceAccount, scale-to-zero on the VM namespace.
    jobs = by_kind(docs, "Job")
    if c.check(len(jobs) == 1, f"expected the uninstall hook Job, found {len(jobs)} Jobs"):
        job = jobs[0]
        ann = job["metadata"].get("annotations", {})
        c.check(ann.get("helm.sh/hook") == "pre-delete", "the Job is not a pre-delete hook")
        c.check("before-hook-creation" in ann.get("helm.sh/hook-delete-policy", ""),
                "hook Job would block a second uninstall attempt")
        jspec = job["spec"]["template"]["spec"]
        jctr = jspec["containers"][0]
        c.check(jctr["image"] == ctr["image"], "hook image differs from the provisioner's")
        c.check(jspec.get("serviceAccountName") == FULLNAME, "hook uses another ServiceAccount")
        c.check(jctr.get("args") == ["scale-to-zero", "--config", "/etc/runner-provisioner/config.yaml",
                                     "--namespace", exp["vm_ns"]],
                f"hook args {jctr.get('args')}")
        c.check(jspec.get("restartPolicy") == "Never", "hook restartPolicy")
        c.check(isinstance(job["spec"].get("activeDeadlineSeconds"), int), "hook has no deadline")
        check_pod_security(c, "hook Job", jspec, jctr)
        check_config_volumes(c, "hook Job", jspec, jctr, exp)
        jenv = env_map(jctr)
        c.check("CIRCLE_TOKEN" not in jenv, "the hook does not need the API token")
    return c.finish()


def pod_annotation(path, key):
    for d in load_docs(path):
        if d.get("kind") == "Deployment":
            return (d["spec"]["template"]["metadata"].get("annotations") or {}).get(key)
    return None


def check_annotation(mode, key, a, b):
    c = Checker(f"{mode} {key}")
    va, vb = pod_annotation(a, key), pod_annotation(b, key)
    c.check(va is not None and vb is not None, f"{key} missing")
    if mode == "differs":
        c.check(va != vb, f"{key} did not change between {a} and {b}: a config change would not roll the pod")
    else:
        c.check(va == vb, f"{key} changed between {a} and {b} although its object did not")
    return c.finish()


def check_notes(notes_path, values_path):
    c = Checker("NOTES")
    with open(notes_path, encoding="utf-8") as f:
        notes = f.read()
    with open(values_path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    for needle in ("kubectl get virtualmachinepool -n", f"kubectl logs -n {RELEASE_NS} deployment/{FULLNAME}",
                   f"service/{FULLNAME}-metrics", "/metrics", "Running VMs are\nnever killed"):
        c.check(needle in notes, f"NOTES do not say {needle!r}")
    for s in secret_strings(values):
        c.check(s not in notes, "NOTES print a token")
    return c.finish()


def check_schema(path):
    """Every property has a type and a description (directly or through its $ref), and every
    object that lists properties refuses unknown ones."""
    import json

    c = Checker("schema")
    with open(path, encoding="utf-8") as f:
        schema = json.load(f)
    definitions = schema.get("definitions", {})

    def resolve(node):
        ref = node.get("$ref")
        return definitions[ref.rsplit("/", 1)[-1]] if ref else node

    def walk(node, where):
        node = resolve(node)
        c.check("type" in node, f"{where or '/'} has no type")
        if node.get("properties") is not None:
            c.check(node.get("additionalProperties") is False or "patternProperties" in node,
                    f"{where or '/'} accepts unknown keys")
        for name, sub in (node.get("properties") or {}).items():
            target = resolve(sub)
            c.check(bool(sub.get("description") or target.get("description")),
                    f"{where}/{name} has no description")
            walk(sub, f"{where}/{name}")
        for name, sub in (node.get("patternProperties") or {}).items():
            walk(sub, f"{where}/<{name}>")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{where}/*")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}[]")

    walk(schema, "")
    return c.finish()


def extract(rendered, out_dir):
    import os

    for d in load_docs(rendered):
        if d["kind"] == "Secret":
            files = {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
        elif d["kind"] == "ConfigMap":
            files = d.get("data", {})
        else:
            continue
        for key, text in files.items():
            with open(os.path.join(out_dir, key), "w", encoding="utf-8") as f:
                f.write(text)
    return 0


def check_dockerfile(path):
    """The chart runs `args: [run]` / `[scale-to-zero, ...]` on the image's ENTRYPOINT, as UID
    65534 with a read-only root filesystem: the final stage must agree."""
    import json

    c = Checker("Dockerfile")
    stages = []
    with open(path, encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    for ln in lines:
        word = ln.split()[0].upper()
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, ln[len(word):].strip()))
    c.check(len(stages) >= 2, "not a multi-stage build")
    if not stages:
        return c.finish()
    final = stages[-1]
    base = final[0][1].split()[0]
    c.check(base == "scratch" or "distroless/static" in base,
            f"final base {base} is not minimal (scratch or distroless/static)")
    users = [arg for word, arg in final if word == "USER"]
    c.check(users[-1:] == ["65534:65534"] or users[-1:] == ["65534"], f"final USER is {users[-1:]}, not 65534")
    entry = [arg for word, arg in final if word == "ENTRYPOINT"]
    c.check(bool(entry) and json.loads(entry[-1]) == ["/usr/local/bin/provisioner"],
            f"ENTRYPOINT {entry} is not the provisioner binary (the chart passes only args)")
    copies = [arg for word, arg in final if word == "COPY"]
    c.check(any(arg.startswith("--from=") and arg.endswith("/usr/local/bin/provisioner") for arg in copies),
            "the final stage does not copy the built binary to /usr/local/bin/provisioner")
    c.check(not any(word == "RUN" for word, _ in final), "the final stage runs commands (it has no shell)")
    return c.finish()


# --- observability: the Grafana dashboard ConfigMap and the PrometheusRule ---------------------
ALERTS = {
    "RunnerProvisionerDemandStale",
    "RunnerProvisionerPoolAtCapWithJobsQueued",
    "RunnerProvisionerVmsFailingToStart",
    "RunnerProvisionerVmsNotRegistering",
    "RunnerProvisionerRegistrationBreakerOpen",
    "RunnerProvisionerJobWaitHigh",
}
# Grafana's variables, replaced by what Grafana would put there so Prometheus can parse a query.
GRAFANA_VARS = {"$__rate_interval": "5m", "$resource_class": ".*"}


def dashboard_configmaps(docs):
    return [d for d in by_kind(docs, "ConfigMap") if "runner-provisioner.json" in (d.get("data") or {})]


def dashboard_queries(dashboard):
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            yield panel.get("title", "?"), target.get("expr", "")


def check_observe(rendered, state):
    """With `on`: one dashboard ConfigMap labelled for Grafana's sidecar holding a dashboard
    whose every query reads the `datasource` variable, and one PrometheusRule with the six
    alerts. With `off`: neither is rendered."""
    import json

    c = Checker(f"observe-{state}")
    docs = load_docs(rendered)
    maps = dashboard_configmaps(docs)
    rules = by_kind(docs, "PrometheusRule")
    if state == "off":
        c.check(not maps, "dashboard ConfigMap rendered although grafanaDashboard.enabled is false")
        c.check(not rules, "PrometheusRule rendered although prometheusRule.enabled is false")
        return c.finish()
    if c.check(len(maps) == 1, f"expected one dashboard ConfigMap, found {len(maps)}"):
        cm = maps[0]
        meta = cm["metadata"]
        c.check(meta.get("labels", {}).get("grafana_dashboard") == "1",
                "dashboard ConfigMap lacks the label grafana_dashboard: \"1\"")
        c.check(meta.get("namespace") == RELEASE_NS, "dashboard ConfigMap not in the release namespace")
        try:
            dashboard = json.loads(cm["data"]["runner-provisioner.json"])
        except ValueError as e:
            c.check(False, f"the dashboard is not JSON: {e}")
            dashboard = {}
        c.check(dashboard.get("uid") == "runner-provisioner", "dashboard uid")
        names = [v.get("name") for v in dashboard.get("templating", {}).get("list", [])]
        c.check(names == ["datasource", "resource_class"], f"dashboard variables {names}")
        queries = list(dashboard_queries(dashboard))
        c.check(len(queries) >= 10, f"only {len(queries)} dashboard queries")
        for title, expr in queries:
            c.check(expr.strip() != "", f"panel {title!r} has an empty query")
            c.check("provisioner_" in expr, f"panel {title!r} reads no provisioner metric")
        for panel in dashboard.get("panels", []):
            if panel.get("type") != "row":
                c.check(panel.get("datasource", {}).get("uid") == "${datasource}",
                        f"panel {panel.get('title')!r} does not use the datasource variable")
                c.check(bool(panel.get("description")), f"panel {panel.get('title')!r} has no description")
        ids = [p.get("id") for p in dashboard.get("panels", [])]
        c.check(len(ids) == len(set(ids)), "panel ids repeat")
    if c.check(len(rules) == 1, f"expected one PrometheusRule, found {len(rules)}"):
        rule = rules[0]
        c.check(rule["metadata"].get("namespace") == RELEASE_NS, "PrometheusRule not in the release namespace")
        c.check(rule["metadata"].get("labels", {}).get("release") == "prometheus",
                "PrometheusRule lacks prometheusRule.labels")
        alerts = {r.get("alert"): r for g in rule["spec"]["groups"] for r in g["rules"]}
        c.check(set(alerts) == ALERTS, f"alerts {sorted(alerts)} are not {sorted(ALERTS)}")
        for name, r in alerts.items():
            c.check(r.get("labels", {}).get("severity") == "critical", f"{name}: severity not from values")
            c.check(bool(r.get("annotations", {}).get("summary")), f"{name}: no summary")
            c.check(bool(r.get("annotations", {}).get("description")), f"{name}: no description")
        wait = alerts.get("RunnerProvisionerJobWaitHigh", {}).get("expr", "")
        c.check(wait.rstrip().endswith("> 900"), f"the wait alert does not use waitP95Seconds: {wait}")
    return c.finish()


def promrules(rendered, out):
    """The PrometheusRule's groups plus a group recording every dashboard query (Grafana's
    variables filled in), for `promtool check rules` to parse."""
    import json

    docs = load_docs(rendered)
    groups = [g for r in by_kind(docs, "PrometheusRule") for g in r["spec"]["groups"]]
    records = []
    for cm in dashboard_configmaps(docs):
        dashboard = json.loads(cm["data"]["runner-provisioner.json"])
        for i, (_, expr) in enumerate(dashboard_queries(dashboard)):
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            records.append({"record": f"dashboard:query_{i}", "expr": expr})
    groups.append({"name": "dashboard-queries", "rules": records})
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    return 0 if records and len(groups) > 1 else 1


def main(argv):
    if len(argv) == 5 and argv[1] == "render":
        return check_render(argv[2], argv[3], argv[4])
    if len(argv) == 5 and argv[1] in ("differs", "same"):
        return check_annotation(argv[1], argv[2], argv[3], argv[4])
    if len(argv) == 3 and argv[1] == "dockerfile":
        return check_dockerfile(argv[2])
    if len(argv) == 4 and argv[1] == "extract":
        return extract(argv[2], argv[3])
    if len(argv) == 3 and argv[1] == "schema":
        return check_schema(argv[2])
    if len(argv) == 4 and argv[1] == "notes":
        return check_notes(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "observe":
        return check_observe(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "promrules":
        return promrules(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
