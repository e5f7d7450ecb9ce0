"""The Helm chart: lint, the rendered manifests, and a real install that is enough to run a job."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ControlPlane, build_binaries
from harness import Kube, Operator, training_job, tuning_job

CHART = Path(__file__).resolve().parents[2] / "charts" / "mentor"
RELEASE, NAMESPACE = "mentor", "mentor-system"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"


def helm(bin_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(bin_dir / "helm"), *args], capture_output=True, text=True,
                            env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


WATCHED = "watchNamespaces={team,tenants}"  # the namespaces the tests' installs run jobs in


def render(*values: str, json_values: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The chart's manifests, in the namespaced mode of the tests' install unless `values`
    choose a scope."""
    if not any(v.startswith(("watchNamespaces", "allNamespaces")) for v in values):
        values = (WATCHED, *values)
    out = helm(build_binaries(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
               *[arg for v in values for arg in ("--set", v)],
               *[arg for v in json_values for arg in ("--set-json", v)])
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


# ------------------------------------------------------------------ rendered manifests


def test_helm_lint_passes() -> None:
    out = helm(build_binaries(), "lint", str(CHART), "--strict")
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_values_schema_rejects_unknown_values() -> None:
    result = subprocess.run([str(build_binaries() / "helm"), "template", "x", str(CHART),
                             "--set", "operator.replica=2"], capture_output=True, text=True,
                            check=False)
    assert result.returncode != 0
    assert "additional properties 'replica' not allowed" in result.stderr


def test_deployment_is_two_restricted_replicas_one_leading() -> None:
    docs = render()
    (deployment,) = find(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2 and "strategy" not in spec, "rolling: a standby takes over"
    pod = spec["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    (pdb,) = find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    (service,) = find(docs, "Service")
    assert service["spec"]["selector"]["mentor.dev/leader"] == "true", "reports reach the leader"
    assert not find(render("operator.replicas=1"), "PodDisruptionBudget")
    fields = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
              for e in pod["containers"][0]["env"]}
    assert fields["MENTOR_POD_NAME"] == "metadata.name"
    assert fields["MENTOR_POD_NAMESPACE"] == "metadata.namespace"
    (leader,) = [r for r in find(docs, "Role") if r["metadata"]["name"].endswith("-leader")]
    assert leader["metadata"]["namespace"] == NAMESPACE
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
            "verbs": ["get", "create", "update"]} in leader["rules"]
    container = pod["containers"][0]
    assert container["args"][:2] == ["operator", "--standalone"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["memory"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MENTOR_TRAINER_IMAGE"] == "ghcr.io/mentor-dev/mentor-trainer:0.1.0"
    assert env["MENTOR_REPORT_URL"] == f"http://{RELEASE}.{NAMESPACE}.svc:8080"


def test_rendering_is_stable_for_gitops() -> None:
    """helm template, Argo CD and Flux render again and again: nothing may change between two
    renders (a random report key did), and Mentor can be a subchart (`global`)."""
    assert render("global.imageRegistry=example.com") == render("global.imageRegistry=example.com")
    assert not find(render(), "Secret"), "the operator keeps the report key itself"
    keyed = find(render("reportKey.existingSecret=my-key"), "Deployment")[0]
    env = {e["name"]: e for e in keyed["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MENTOR_REPORT_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "my-key"


def test_security_contexts_and_trainer_settings_are_values() -> None:
    docs = render("operator.podSecurityContext=null", "trainer.runAsUser=null",
                  "trainer.imagePullSecrets={regcred}", "grafana.dashboard.namespace=grafana",
                  "grafana.dashboard.folder=Training")
    (deployment,) = find(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert not pod.get("securityContext"), "OpenShift assigns its own UIDs"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MENTOR_TRAINER_RUN_AS_USER"] == ""
    assert env["MENTOR_TRAINER_IMAGE_PULL_SECRETS"] == "regcred"
    (dashboard,) = [d for d in find(docs, "ConfigMap")
                    if d["metadata"]["name"].endswith("dashboard")]
    assert dashboard["metadata"]["namespace"] == "grafana"
    assert dashboard["metadata"]["annotations"]["grafana_folder"] == "Training"


def test_the_chart_readme_is_generated_from_the_values() -> None:
    from chart_readme import render as readme

    assert (CHART / "README.md").read_text() == readme(), \
        "run: python tests/chart/chart_readme.py > charts/mentor/README.md"


def test_values_reach_the_operator() -> None:
    (deployment,) = find(render("trainer.image=registry.local/trainer:9",
                                json_values=('gpuPrices={"H100": 2.5}',)), "Deployment")
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MENTOR_TRAINER_IMAGE"] == "registry.local/trainer:9"
    assert json.loads(env["MENTOR_GPU_PRICES"]) == {"H100": 2.5}


def test_metrics_have_a_port_of_their_own_open_to_the_monitoring_namespace_only() -> None:
    docs = render()
    (deployment,) = find(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MENTOR_METRICS_PORT"] == "8082" and env["MENTOR_HTTP_PORT"] == "8080"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8080, "metrics": 8082, "liveness": 8081}
    (service,) = find(docs, "Service")
    assert [p["name"] for p in service["spec"]["ports"]] == ["http", "metrics"]
    (monitor,) = find(render("metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (policy,) = find(docs, "NetworkPolicy")
    reports, scrape = policy["spec"]["ingress"]
    assert "from" not in reports, "every trainer reports, from any namespace"
    assert [p["port"] for p in reports["ports"]] == [8080, 8081]
    assert scrape["ports"] == [{"protocol": "TCP", "port": 8082}]
    assert scrape["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    assert not find(render("networkPolicy.operator=false"), "NetworkPolicy")


def rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]


def test_rbac_is_least_privilege() -> None:
    for rule in rules(render()):
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        if "secrets" in rule["resources"]:  # never read other people's secrets
            assert set(rule["verbs"]) == {"create"} or (
                set(rule["verbs"]) == {"get"}
                and rule["resourceNames"] == [f"{RELEASE}-report-key"]), rule
        assert "pods/exec" not in rule["resources"]


RBAC_GOLDEN = Path(__file__).parent / "rbac.golden"


def rbac_lines(docs: list[dict[str, Any]]) -> list[str]:
    """Every verb the chart grants, one line a rule: what a reviewer reads in a diff."""
    def line(kind: str, name: str, rule: dict[str, Any]) -> str:
        groups = ",".join(g or "core" for g in rule.get("apiGroups", []))
        names = f" [{','.join(rule['resourceNames'])}]" if rule.get("resourceNames") else ""
        return (f"{kind} {name}: {groups} {','.join(rule['resources'])}{names} "
                f"{','.join(sorted(rule['verbs']))}")

    return sorted(line(d["kind"], d["metadata"]["name"], r)
                  for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"])


def test_every_verb_the_chart_grants_is_in_the_golden_file() -> None:
    """A verb added to the operator (or to users) fails here until the golden file, reviewed
    in the diff, says so: `UPDATE_GOLDEN=1 pytest tests/chart -k golden` rewrites it."""
    import os

    lines = rbac_lines(render(json_values=('gpuPrices={"H100": 2.5}',)))
    if os.environ.get("UPDATE_GOLDEN"):
        RBAC_GOLDEN.write_text("\n".join(lines) + "\n")
    assert lines == RBAC_GOLDEN.read_text().splitlines()


def test_users_get_mentor_rights_through_the_builtin_roles() -> None:
    roles = {r["metadata"]["name"]: r for r in find(render(), "ClusterRole")}
    edit, view = roles[f"{RELEASE}-edit"], roles[f"{RELEASE}-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "create" in edit["rules"][0]["verbs"]
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in view["rules"])


def test_the_operator_works_in_listed_namespaces_unless_told_all() -> None:
    """Least privilege by default: no install without a scope, and all namespaces (a ClusterRole
    to create pods and Secrets anywhere) only when asked for."""
    result = subprocess.run([str(build_binaries() / "helm"), "template", "x", str(CHART)],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "set watchNamespaces (the namespaces whose jobs Mentor runs" in result.stderr
    everywhere = render("allNamespaces=true")
    assert {r["metadata"]["name"] for r in find(everywhere, "ClusterRole")} == {
        RELEASE, f"{RELEASE}-edit", f"{RELEASE}-view"}
    (binding,) = find(everywhere, "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == RELEASE


def test_namespaced_install_uses_roles_only() -> None:
    docs = render("watchNamespaces={team-a,team-b}")
    assert not find(docs, "ClusterRoleBinding"), "nothing cluster-wide for the operator"
    # only the users' roles, aggregated into edit and view where someone binds those
    assert {r["metadata"]["name"] for r in find(docs, "ClusterRole")} == {
        f"{RELEASE}-edit", f"{RELEASE}-view"}
    roles = find(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == [NAMESPACE, "team-a", "team-b"]
    (deployment,) = find(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MENTOR_NAMESPACES"] == "team-a,team-b"


def test_monitoring_is_gated_and_labelled() -> None:
    kinds = {d["kind"] for d in render()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    docs = render("metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true",
                  "metrics.prometheusRule.enabled=true",
                  "metrics.serviceMonitor.labels.release=prom",
                  "metrics.podMonitor.labels.release=prom",
                  "metrics.prometheusRule.labels.release=prom")
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        (doc,) = find(docs, kind)
        assert doc["metadata"]["labels"]["release"] == "prom"
    (rule,) = find(docs, "PrometheusRule")
    alerts = {r["alert"] for r in rule["spec"]["groups"][0]["rules"]}
    assert alerts == {"MentorOperatorDown", "MentorReconcileErrors", "MentorJobFailed",
                      "MentorJobPendingTooLong", "MentorJobNoProgress", "MentorLossNotFinite",
                      "MentorGPUBudgetNearlyUsed", "MentorGPUBudgetRunsOutSoon"}
    text = json.dumps(rule["spec"])
    assert "_SECONDS" not in text and "RUNBOOK" not in text, "every placeholder is filled"


def test_dashboard_configmap_for_grafana() -> None:
    (cm,) = [d for d in find(render(), "ConfigMap") if d["metadata"]["name"].endswith("dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["mentor.json"])
    assert dashboard["title"] == "Mentor: training jobs"
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Chargeback", "Operator health", "MFU", "GPU-hours by namespace (time range)",
            "Tuning", "Best objective over time"} <= titles


def test_crds_are_gated_and_kept() -> None:
    crds = {c["metadata"]["name"]: c for c in find(render(), "CustomResourceDefinition")}
    assert set(crds) == {"trainingjobs.mentor.dev", "tuningjobs.mentor.dev"}
    for name, crd in crds.items():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd == {**crd, "spec": yaml.safe_load(
            (CHART.parents[1] / "crds" / f"{name}.yaml").read_text())["spec"]}
    unkept = find(render("crds.keep=false"), "CustomResourceDefinition")
    assert len(unkept) == 2 and not any(c["metadata"].get("annotations") for c in unkept)
    assert not find(render("crds.enabled=false"), "CustomResourceDefinition")


# ------------------------------------------------------------------ a real install


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of its own: the chart installs the CRDs, which no other test did."""
    with ControlPlane(build_binaries(), work_dir=tmp_path_factory.mktemp("chart-k8s")) as cp:
        yield cp


@pytest.fixture(scope="module")
def installed(cluster: ControlPlane) -> ControlPlane:
    for namespace in ("team", "tenants"):  # the watched namespaces exist before the install
        cluster.kubectl("create", "namespace", namespace)
    helm(cluster.bin_dir, "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
         "--set", WATCHED,
         "--create-namespace", "--wait=false", env=cluster.env())
    return cluster


@pytest.fixture(scope="module")
def operator_as_its_service_account(installed: ControlPlane,
                                    tmp_path_factory: pytest.TempPathFactory
                                    ) -> Iterator[Operator]:
    """The operator out of cluster, with nothing but the chart's ServiceAccount token."""
    work = tmp_path_factory.mktemp("sa")
    token = installed.kubectl("create", "token", RELEASE, "-n", NAMESPACE,
                              "--duration=2h").strip()
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {
            "server": installed.server, "certificate-authority": str(installed.pki.ca_crt)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }))
    env = {e["name"]: e.get("value") for e in find(render(), "Deployment")[0]["spec"][
        "template"]["spec"]["containers"][0]["env"]}
    op = Operator(installed, work / "operator.log", KUBECONFIG=str(kubeconfig),
                  MENTOR_POD_NAMESPACE=NAMESPACE, MENTOR_LEASE_NAME=RELEASE,
                  MENTOR_REPORT_KEY_SECRET=env["MENTOR_REPORT_KEY_SECRET"],
                  MENTOR_NAMESPACES=env["MENTOR_NAMESPACES"])
    op.start()
    yield op
    op.stop()
    assert not op.errors(), op.log_path.read_text()[-5000:]


def test_install_is_enough_to_run_a_job_in_a_restricted_namespace(
    installed: ControlPlane, operator_as_its_service_account: Operator
) -> None:
    installed.kubectl("label", "namespace", "team",
                      "pod-security.kubernetes.io/enforce=restricted")
    installed.kubectl("wait", "--for=create", "--timeout=60s", "-n", "team",
                      "serviceaccount/default")
    kube = Kube(installed, "team")
    kube.apply(training_job("installed"))
    kube.wait("trainingjob/installed", "condition=Running")
    assert len(kube.pods("installed")) == 2, "the restricted profile admitted the trainer pods"
    kube.end_pods("installed", "succeed")
    kube.wait("trainingjob/installed", "condition=Succeeded")
    key = installed.kubectl("get", "secret", f"{RELEASE}-report-key", "-n", NAMESPACE, "-o",
                            "jsonpath={.data.key}")
    assert len(key) > 40, "the operator made the report key, with only its own rights"
    # A TuningJob: the operator creates its trial TrainingJob and writes its status.
    kube.apply(tuning_job("tuned", baseModel={"trainingJobRef": {"name": "installed"}}))
    kube.wait("trainingjob/tuned-t0", "create")
    kube.wait("tuningjob/tuned", "jsonpath={.status.phase}=Running")
    assert kube.get("tuningjob", "tuned")["status"]["lineage"]["trainingJob"] == "installed"


def test_service_account_has_least_privilege(installed: ControlPlane) -> None:
    listing = installed.kubectl("auth", "can-i", "--list", f"--as={SERVICE_ACCOUNT}")
    (Path(__file__).parent / ".can-i.txt").write_text(listing)  # for the issue note
    rows = [line.split() for line in listing.splitlines()[1:] if line.strip()]
    for row in rows:
        resource, verbs = row[0], " ".join(row[1:])
        assert resource != "*.*" and "[*]" not in verbs, row
        if resource == "secrets":  # only the report key it keeps: `secrets [] [NAME] [get]`
            assert "list" not in verbs, row
            assert "get" not in verbs or f"[{RELEASE}-report-key]" in row, row
        assert not resource.startswith("pods/exec"), row
    assert installed.kubectl("auth", "can-i", "get", "secrets", "-A",
                             f"--as={SERVICE_ACCOUNT}", check=False).strip() == "no"
    assert installed.kubectl("auth", "can-i", "create", "pods", "--subresource=exec", "-n",
                             "team", f"--as={SERVICE_ACCOUNT}", check=False).strip() == "no"


ESCAPES = {  # a template field that would reach the pods, and what the refusal names
    "hostPath": ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
                 "spec.template.volumes: only these volume types are allowed"),
    "nfs": ({"volumes": [{"name": "n", "nfs": {"server": "10.0.0.1", "path": "/"}}]},
            "spec.template.volumes: only these volume types are allowed"),
    "inline CSI": ({"volumes": [{"name": "c", "csi": {"driver": "x.csi.k8s.io"}}]},
                   "spec.template.volumes: only these volume types are allowed"),
    "a ServiceAccount": ({"serviceAccountName": "deployer"},
                         "spec.template.serviceAccountName: you may not use this ServiceAccount"),
    "a Secret in env": ({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {
        "name": "db", "key": "password"}}}]}, "spec.template: it references Secrets"),
    "a Secret volume": ({"volumes": [{"name": "s", "secret": {"secretName": "db"}}]},
                        "spec.template: it references Secrets"),
    "a projected Secret": ({"volumes": [{"name": "p", "projected": {"sources": [
        {"secret": {"name": "db"}}]}}]}, "spec.template: it references Secrets"),
    "a pull Secret": ({"imagePullSecrets": ["regcred"]}, "spec.template: it references Secrets"),
    "a ConfigMap": ({"env": [{"name": "C", "valueFrom": {"configMapKeyRef": {
        "name": "cfg", "key": "k"}}}]}, "spec.template: it references ConfigMaps"),
    "imagePullPolicy Never": ({"imagePullPolicy": "Never"},
                              "spec.template.imagePullPolicy: Never would run images"),
}


@pytest.fixture(scope="module")
def tenants(installed: ControlPlane) -> ControlPlane:
    """Namespace `tenants`: alice has only mentor-edit; carol has mentor-edit and may create
    pods (nothing else); dave has the built-in edit role and may use one ServiceAccount."""
    cp = installed
    cp.kubectl("wait", "--for=create", "--timeout=60s", "-n", "tenants", "serviceaccount/default")
    for user in ("alice", "carol"):
        cp.kubectl("create", "rolebinding", f"{user}-mentor", "-n", "tenants",
                   f"--clusterrole={RELEASE}-edit", f"--user={user}")
    cp.kubectl("create", "role", "pods-only", "-n", "tenants", "--verb=create",
               "--resource=pods")
    cp.kubectl("create", "rolebinding", "carol-pods", "-n", "tenants", "--role=pods-only",
               "--user=carol")
    cp.kubectl("create", "rolebinding", "dave-edit", "-n", "tenants", "--clusterrole=edit",
               "--user=dave")
    cp.kubectl("apply", "-f", "-", input=json.dumps({  # `use` is not a verb kubectl create knows
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "use-trainer-sa", "namespace": "tenants"},
        "rules": [{"apiGroups": [""], "resources": ["serviceaccounts"],
                   "resourceNames": ["trainer"], "verbs": ["use"]}]}))
    cp.kubectl("create", "rolebinding", "dave-use", "-n", "tenants", "--role=use-trainer-sa",
               "--user=dave")
    return cp


def submit(cp: ControlPlane, user: str, name: str, template: dict[str, Any],
           **spec: Any) -> str:
    """Create a job as `user`; the API server's refusal, or "" if it was admitted."""
    done = subprocess.run(
        [str(cp.bin_dir / "kubectl"), "-n", "tenants", "create", f"--as={user}", "-f", "-"],
        input=json.dumps(training_job(name, template=template, **spec)), env=cp.env(),
        capture_output=True, text=True, timeout=60, check=False)
    return "" if done.returncode == 0 else done.stderr


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_a_job_cannot_give_its_author_what_a_pod_would_not(
        tenants: ControlPlane, escape: str) -> None:
    """carol may create pods, but not use a ServiceAccount, read Secrets or ConfigMaps, or
    mount the host: neither may her TrainingJob, which the operator's account would create."""
    template, said = ESCAPES[escape]
    refusal = submit(tenants, "carol", f"escape-{list(ESCAPES).index(escape)}", template)
    assert "mentor-requester-rights" in refusal and said in refusal, refusal


@pytest.mark.parametrize(("trainer", "said"), [
    ({"code": {"configMap": {"name": "cfg", "key": "train.py"}}},
     "it references ConfigMaps"),
    ({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]},
     "it references Secrets"),
], ids=["code from a ConfigMap", "a Secret in the trainer's env"])
def test_a_custom_trainer_cannot_read_what_its_author_may_not(
        tenants: ControlPlane, trainer: dict[str, Any], said: str) -> None:
    refusal = submit(tenants, "carol", f"custom-{len(said)}", {},
                     trainer={"type": "custom", "command": ["train.py"], **trainer})
    assert "mentor-requester-rights" in refusal and said in refusal, refusal


def test_a_job_is_pods_so_its_author_must_be_able_to_create_pods(
        tenants: ControlPlane, operator_as_its_service_account: Operator) -> None:
    refusal = submit(tenants, "alice", "alice-plain", {})
    assert "spec: you may not create pods in this namespace" in refusal, refusal
    assert submit(tenants, "carol", "carol-plain", {}) == "", "pods create is enough"
    kube = Kube(tenants, "tenants")
    kube.wait("trainingjob/carol-plain", "condition=Running")  # and the allowed job runs
    assert len(kube.pods("carol-plain")) == 2


def test_what_the_author_may_do_a_job_may_do(tenants: ControlPlane) -> None:
    """dave (edit, and use of one ServiceAccount) may reference Secrets and ConfigMaps and run
    as that ServiceAccount; no one may mount the host."""
    allowed = {"serviceAccountName": "trainer", "imagePullSecrets": ["regcred"],
               "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}],
               "volumes": [{"name": "c", "configMap": {"name": "cfg"}},
                           {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}
    assert submit(tenants, "dave", "dave-allowed", allowed) == ""
    refusal = submit(tenants, "dave", "dave-other-sa", {"serviceAccountName": "deployer"})
    assert "you may not use this ServiceAccount" in refusal
    refusal = submit(tenants, "dave", "dave-host", ESCAPES["hostPath"][0])
    assert "only these volume types are allowed: persistentVolumeClaim, emptyDir" in refusal


def test_the_operators_account_may_make_only_mentors_pods_and_secrets(
        tenants: ControlPlane) -> None:
    """RBAC lets the operator create pods and Secrets in the watched namespaces (in every one,
    kube-system included, with allNamespaces); the chart's admission policy on its own account
    holds it to Mentor's there."""
    def as_operator(manifest: dict[str, Any], namespace: str) -> str:
        done = subprocess.run(
            [str(tenants.bin_dir / "kubectl"), "-n", namespace, "create",
             f"--as={SERVICE_ACCOUNT}", "-f", "-"], input=json.dumps(manifest),
            env=tenants.env(), capture_output=True, text=True, timeout=60, check=False)
        return "" if done.returncode == 0 else done.stderr

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell"},
           "spec": {"serviceAccountName": "default",
                    "containers": [{"name": "c", "image": "busybox"}]}}
    # Outside the watched namespaces RBAC refuses; inside them, the policy.
    assert "forbidden" in as_operator(pod, "kube-system")
    refusal = as_operator(pod, "tenants")
    assert "mentor-operator-scope" in refusal and "only Mentor's pods" in refusal, refusal
    labelled = {**pod, "metadata": {"name": "shell", "labels": {
        "mentor.dev/job-name": "x", "mentor.dev/job-kind": "TrainingJob"}}}
    assert "only Mentor's pods" in as_operator(labelled, "tenants"), "labels without an owner"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "stolen"},
              "stringData": {"k": "v"}}
    assert "forbidden" in as_operator(secret, "kube-system")
    refusal = as_operator(secret, "tenants")
    assert "only Mentor's Secrets" in refusal, refusal


def test_upgrade_with_a_changed_value_and_uninstall_keeps_crds(
    installed: ControlPlane, operator_as_its_service_account: Operator
) -> None:
    helm(installed.bin_dir, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE,
         "--reuse-values", "--set", "trainer.image=registry.local/trainer:2",
         env=installed.env())
    deployment = json.loads(installed.kubectl("get", "deployment", RELEASE, "-n", NAMESPACE,
                                              "-o", "json"))
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MENTOR_TRAINER_IMAGE"] == "registry.local/trainer:2"
    assert deployment["metadata"]["generation"] >= 2

    operator_as_its_service_account.stop()  # its rights go with the release
    helm(installed.bin_dir, "uninstall", RELEASE, "--namespace", NAMESPACE, env=installed.env())
    installed.kubectl("get", "crd", "trainingjobs.mentor.dev")  # kept: jobs are not lost
    assert installed.kubectl("get", "deployment", "-n", NAMESPACE, "-o", "name") == ""

