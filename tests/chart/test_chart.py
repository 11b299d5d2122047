"""The Helm chart, rendered by the real Helm engine (helm-python-sdk, Helm
v4's Go SDK), every object validated against the Kubernetes schemas with
kubernetes-validate, plus the checks a reviewer would make."""

from __future__ import annotations

import copy
import pathlib
import re

import kubernetes_validate
import pytest
import yaml
from helm_python import chart as helm_chart
from helm_python.errors import HelmError

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kache-service"
K8S_VERSION = "1.32.0"
RELEASE, NAMESPACE = "ci", "build"

SCENARIOS = {
    "defaults": {},
    "pvc": {"planner": {"persistence": {"type": "pvc", "size": "20Gi", "storageClass": "fast"}}},
    "auth": {"auth": {"existingSecret": "planner-token", "existingSecretKey": "bearer"}},
    "scoped": {
        "auth": {
            "existingSecret": "planner-token",
            "ingestExistingSecret": "planner-ingest",
            "ingestNamespaces": "ci-*,main",
        },
        "planner": {"maxArtifacts": 50000, "trustedKeys": ["ed25519:" + "ab" * 32, "ed25519:" + "cd" * 32]},
    },
    "ha": {"replicaCount": 2, "ha": {"enabled": True, "leaseName": "planner-lock"}},
    "bucket": {
        "bucket": {
            "name": "rust-cache",
            "endpoint": "http://garage.storage:3900",
            "existingSecret": "bucket-keys",
            "scanInterval": 30,
            "gc": {"interval": 3600, "keepDays": 7, "maxBytes": 500_000_000_000},
        }
    },
    "combined": {
        "replicaCount": 3,
        "ha": {"enabled": True, "namespace": "coordination"},
        "auth": {"existingSecret": "tok"},
        "planner": {"persistence": {"type": "pvc", "accessMode": "ReadWriteMany"}},
        "service": {"type": "LoadBalancer", "port": 9000},
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "resources": {"limits": {"memory": "512Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}],
    },
}


def render(values: dict) -> list[dict]:
    chart = helm_chart.Chart.load(CHART)
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(values: dict) -> str:
    chart = helm_chart.Chart.load(CHART)
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(objects: list[dict]) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def env(objects: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for e in container(objects)["env"]}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rendered_object_is_valid_kubernetes(scenario):
    for obj in render(SCENARIOS[scenario]):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_is_clean(scenario):
    report = helm_chart.lint(CHART, SCENARIOS[scenario], strict=True)
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_names_labels_and_selectors_agree(scenario):
    objects = render(SCENARIOS[scenario])
    fullname = f"{RELEASE}-kache-service"
    for obj in objects:
        assert obj["metadata"]["name"] == fullname, obj["kind"]
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "kache-service"
        assert labels["app.kubernetes.io/instance"] == RELEASE
    deployment = one(objects, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert one(objects, "Service")["spec"]["selector"] == selector
    ports = {p["name"]: p for p in container(objects)["ports"]}
    assert ports["http"]["containerPort"] == 8080
    assert one(objects, "Service")["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_security_context_holds_in_every_combination(scenario):
    objects = render(SCENARIOS[scenario])
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["runAsGroup"] == 65532
    assert pod["securityContext"]["fsGroup"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_probes_point_at_health_and_readiness_on_the_http_port(scenario):
    c = container(render(SCENARIOS[scenario]))
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_database_lives_on_its_volume(scenario):
    values = SCENARIOS[scenario]
    objects = render(values)
    pvc_wanted = values.get("planner", {}).get("persistence", {}).get("type") == "pvc"
    claims = of_kind(objects, "PersistentVolumeClaim")
    assert len(claims) == (1 if pvc_wanted else 0)
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    if pvc_wanted:
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claims[0]["metadata"]["name"]
    else:
        assert volumes["data"] == {"name": "data", "emptyDir": {}}
    mounts = {m["name"]: m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert mounts["data"] == "/var/lib/kache"
    assert env(objects)["KACHE_PLANNER_DB_PATH"]["value"] == "/var/lib/kache/planner.db"
    assert env(objects)["KACHE_PLANNER_DB_PATH"]["value"].startswith(mounts["data"] + "/")


def test_a_pvc_claims_its_size_and_class():
    claim = one(render(SCENARIOS["pvc"]), "PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    deployment = one(render(SCENARIOS["pvc"]), "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "an RWO claim cannot roll"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_token_comes_only_from_the_named_secret(scenario):
    values = SCENARIOS[scenario]
    variables = env(render(values))
    secret = values.get("auth", {}).get("existingSecret")
    if secret:
        ref = variables["KACHE_PLANNER_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret
        assert ref["key"] == values["auth"].get("existingSecretKey", "token")
        assert "value" not in variables["KACHE_PLANNER_TOKEN"]
    else:
        assert "KACHE_PLANNER_TOKEN" not in variables


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ha_objects_token_mount_and_flags_exist_only_under_ha(scenario):
    values = SCENARIOS[scenario]
    objects = render(values)
    ha = values.get("ha", {}).get("enabled", False)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    variables = env(objects)
    assert variables["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    if not ha:
        assert pod["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in pod
        for kind in ["ServiceAccount", "Role", "RoleBinding"]:
            assert of_kind(objects, kind) == []
        assert "KACHE_HA_ENABLED" not in variables
        return
    account = one(objects, "ServiceAccount")
    role = one(objects, "Role")
    binding = one(objects, "RoleBinding")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    lease_ns = values["ha"].get("namespace") or NAMESPACE
    assert role["metadata"]["namespace"] == lease_ns
    assert binding["metadata"]["namespace"] == lease_ns
    lease = values["ha"].get("leaseName", "kache-service")
    verbs = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["coordination.k8s.io"]
        assert rule["resources"] == ["leases"]
        for verb in rule["verbs"]:
            verbs[verb] = rule.get("resourceNames")
    assert verbs == {"get": [lease], "update": [lease], "create": None}, "exactly the Lease verbs"
    assert variables["KACHE_HA_ENABLED"]["value"] == "true"
    assert variables["KACHE_HA_LEASE_NAME"]["value"] == lease
    assert variables["KACHE_HA_NAMESPACE"]["value"] == lease_ns
    assert one(objects, "Deployment")["spec"]["replicas"] == values["replicaCount"]


def test_common_knobs_reach_the_pod():
    values = SCENARIOS["combined"]
    objects = render(values)
    pod = one(objects, "Deployment")["spec"]["template"]
    assert pod["metadata"]["annotations"] == values["podAnnotations"]
    assert pod["spec"]["nodeSelector"] == values["nodeSelector"]
    assert pod["spec"]["tolerations"] == values["tolerations"]
    # Helm merges a user's resources into the chart's defaults.
    resources = container(objects)["resources"]
    assert resources["limits"]["memory"] == "512Mi"
    assert resources["requests"] == yaml.safe_load((CHART / "values.yaml").read_text())["resources"]["requests"]
    service = one(objects, "Service")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"][0]["port"] == 9000
    image = container(render({"image": {"repository": "r.example/kache", "tag": "1.2.3", "pullPolicy": "Always"}}))
    assert image["image"] == "r.example/kache:1.2.3"
    assert image["imagePullPolicy"] == "Always"
    default_image = container(render({}))["image"]
    assert default_image.endswith(":" + yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])


def test_the_bucket_settings_reach_the_pod_and_keys_come_only_from_the_secret():
    variables = env(render(SCENARIOS["bucket"]))
    assert variables["KACHE_S3_BUCKET"]["value"] == "rust-cache"
    assert variables["KACHE_S3_ENDPOINT"]["value"] == "http://garage.storage:3900"
    assert variables["KACHE_S3_REGION"]["value"] == "us-east-1"
    assert variables["KACHE_S3_PREFIX"]["value"] == "artifacts"
    assert variables["KACHE_PLANNER_SCAN_INTERVAL"]["value"] == "30"
    assert variables["KACHE_PLANNER_GC_INTERVAL"]["value"] == "3600"
    assert variables["KACHE_PLANNER_GC_KEEP_DAYS"]["value"] == "7"
    assert variables["KACHE_PLANNER_GC_GRACE"]["value"] == "21600"
    # Large byte counts are written whole, not as 5e+11.
    assert variables["KACHE_PLANNER_GC_MAX_BYTES"]["value"] == "500000000000"
    # By default: collected only on demand, to no byte bound.
    defaults = env(render({"bucket": {"name": "rust-cache"}}))
    assert defaults["KACHE_PLANNER_GC_INTERVAL"]["value"] == "0"
    assert "KACHE_PLANNER_GC_MAX_BYTES" not in defaults
    for name, key in [("KACHE_S3_ACCESS_KEY", "access-key"), ("KACHE_S3_SECRET_KEY", "secret-key")]:
        assert "value" not in variables[name]
        assert variables[name]["valueFrom"]["secretKeyRef"] == {"name": "bucket-keys", "key": key}
    # Without a bucket the planner reads none; without a Secret, no key variables.
    assert not any(n.startswith("KACHE_S3_") for n in env(render({})))
    no_secret = env(render({"bucket": {"name": "rust-cache"}}))
    assert "KACHE_S3_ACCESS_KEY" not in no_secret and "KACHE_S3_ENDPOINT" not in no_secret


def test_notes_tell_clients_the_endpoint():
    text = notes({})
    assert f"KACHE_PLANNER_ENDPOINT=http://{RELEASE}-kache-service.{NAMESPACE}.svc.cluster.local:8080" in text
    assert "KACHE_PLANNER_TOKEN" in notes(SCENARIOS["auth"])


@pytest.mark.parametrize(
    "bad",
    [
        {"planner": {"persistence": {"type": "disk"}}},
        {"replicaCount": "two"},
        {"replicaCount": 0},
        {"image": {"pullPolicy": "Sometimes"}},
        {"service": {"port": "http"}},
        {"service": {"type": "Ingress"}},
        {"ha": {"enabled": "yes"}},
        {"planner": {"persistence": {"size": "lots"}}},
        {"planner": {"dbpath": "/typo"}},
        {"replicas": 2},
        {"bucket": {"scanInterval": 0}},
        {"bucket": {"gc": {"keepDays": 0}}},
        {"bucket": {"gc": {"maxBytes": "1T"}}},
        {"bucket": {"gc": {"every": 60}}},
        {"bucket": {"bucket": "typo"}},
        {"planner": {"maxArtifacts": 0}},
        {"planner": {"maxArtifacts": "many"}},
        {"planner": {"trustedKeys": "ed25519:" + "ab" * 32}},
        {"planner": {"trustedKeys": ["rsa:abc"]}},
        {"auth": {"ingestNamespaces": "ci/*"}},
        {"auth": {"ingestSecret": "typo"}},
        {"resources": {"limit": {"memory": "1Gi"}}},
    ],
)
def test_the_values_schema_rejects_wrong_types_enums_and_typos(bad):
    chart = helm_chart.Chart.load(CHART)
    with pytest.raises(HelmError):
        chart.validate_schema(bad)
    with pytest.raises(HelmError):
        chart.render(bad, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"planner": {"dbPath": "/data/planner.db"}}, "must live under"),
        ({"replicaCount": 2}, "needs ha.enabled"),
        (
            {"auth": {"existingSecret": "same", "ingestExistingSecret": "same", "ingestExistingSecretKey": "token"}},
            "must be a different secret value",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(bad, message):
    with pytest.raises(HelmError, match=re.escape(message)):
        render(bad)


def test_values_yaml_documents_the_design_names_and_defaults():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    persistence = values["planner"]["persistence"]
    assert values["planner"]["dbPath"] == "/var/lib/kache/planner.db"
    assert persistence["enabled"] is True
    assert persistence["type"] == "ephemeral"
    assert persistence["mountPath"] == "/var/lib/kache"
    assert values["ha"]["leaseName"] == "kache-service"
    assert {"existingSecret", "existingSecretKey"} <= set(values["auth"])
    assert values["auth"]["ingestExistingSecret"] == "", "no ingest token unless asked"
    assert values["auth"]["ingestNamespaces"] == "*"
    assert copy.deepcopy(values) == values


def test_the_image_build_matches_the_chart():
    dockerfile = (ROOT / "docker" / "service.Dockerfile").read_text()
    assert re.search(r"^USER 65532:65532$", dockerfile, re.M)
    assert re.search(r"^EXPOSE 8080$", dockerfile, re.M)
    assert dockerfile.count("FROM ") >= 2, "multi-stage"
    build = re.search(r"^RUN (cargo build .*)$", dockerfile, re.M).group(1)
    assert "--locked" in build and "--release" in build and "-p kache-service" in build
    bake = (ROOT / "docker-bake.hcl").read_text()
    assert re.search(r'variable "PLATFORM" \{\s*default = "linux/amd64"', bake)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_ingest_token_and_its_namespaces_come_only_from_their_values(scenario):
    values = SCENARIOS[scenario]
    variables = env(render(values))
    auth = values.get("auth", {})
    secret = auth.get("ingestExistingSecret")
    if secret:
        ref = variables["KACHE_PLANNER_INGEST_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret, "key": auth.get("ingestExistingSecretKey", "ingest-token")}
        assert "value" not in variables["KACHE_PLANNER_INGEST_TOKEN"]
    else:
        assert "KACHE_PLANNER_INGEST_TOKEN" not in variables
    assert variables["KACHE_PLANNER_INGEST_NAMESPACES"]["value"] == auth.get("ingestNamespaces", "*")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_pod_has_requests_limits_and_a_state_bound(scenario):
    values = SCENARIOS[scenario]
    planner = container(render(values))
    resources = planner["resources"]
    for kind in ["requests", "limits"]:
        assert resources[kind]["memory"], f"{kind}.memory"
    assert resources["requests"]["cpu"]
    bound = values.get("planner", {}).get("maxArtifacts", 100000)
    variables = {v["name"]: v for v in planner["env"]}
    assert variables["KACHE_PLANNER_MAX_ARTIFACTS"]["value"] == str(bound)
    keys = values.get("planner", {}).get("trustedKeys", [])
    if keys:
        assert variables["KACHE_PLANNER_TRUSTED_KEYS"]["value"] == ",".join(keys)
    else:
        assert "KACHE_PLANNER_TRUSTED_KEYS" not in variables


def test_notes_say_loudly_when_the_planner_is_open_and_what_each_token_may_do():
    open_notes = notes({})
    assert "WARNING: no auth.existingSecret is set" in open_notes
    assert '"auth": "none"' in open_notes
    assert "plain http://" in open_notes
    single = notes(SCENARIOS["auth"])
    assert "WARNING" not in single
    assert "auth.ingestExistingSecret" in single, "one token: say what a second one gives"
    scoped = notes(SCENARIOS["scoped"])
    assert "WARNING" not in scoped
    assert 'Secret "planner-ingest"' in scoped and '"ci-*,main"' in scoped
    assert "50000 artifacts" in scoped
    ingest_only = notes({"auth": {"ingestExistingSecret": "ingest"}})
    assert "plans and feedback are anonymous" in ingest_only
