"""The Kubernetes manifests (deploy/kubernetes/) checked offline, without a cluster.

Every object kustomization.yaml lists is validated, strictly (no unknown field), against the
Kubernetes API's own schemas as kubernetes-validate ships them; then what the schemas cannot
say: three pods that each reach the others at their own pod IP, the secret as files, probes
on the health route at the port the server binds, a Service and the z2jh values that point
the singleuser pods' pip at it, and their network policy letting them through.
"""
from __future__ import annotations

import configparser
import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pypicache.config import TABLE

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.30"  # the oldest release still in wide use that the checks are made against


def resources() -> list[dict]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    return [document for name in kustomization["resources"]
            for document in yaml.safe_load_all((MANIFESTS / name).read_text()) if document]


def find(kind: str, name: str) -> dict:
    (found,) = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def schema_errors(resource: dict) -> list[str]:
    try:
        kubernetes_validate.validate(resource, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    return []


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container["env"]}


def test_every_file_of_the_directory_is_in_the_kustomization():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    shipped = {path.name for path in MANIFESTS.glob("*.yaml")}
    assert set(kustomization["resources"]) == shipped - {"kustomization.yaml", "z2jh-values.yaml"}


@pytest.mark.parametrize("resource", resources(),
                         ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_every_object_is_valid_against_the_kubernetes_api_schema(resource):
    assert schema_errors(resource) == []


@pytest.mark.parametrize(("path", "value"), [
    (["spec", "replicas"], "three"),  # a wrong type
    (["spec", "template", "spec", "containers", 0, "ports", 0, "containerPort"], "http"),
    (["spec", "template", "spec", "containers", 0, "readinessProbe", "httpGet", "paht"],
     "/healthz"),  # a misspelt field: strict validation rejects what the API would drop
    (["spec", "template", "spec", "containers", 0, "env", 2, "valueFrom"], {"podIP": True}),
])
def test_the_check_rejects_a_broken_deployment(path, value):
    broken = copy.deepcopy(find("Deployment", "pypicache"))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert schema_errors(broken), f"{path} = {value!r} passed the schema"


def test_three_pods_each_reachable_at_its_own_pod_ip_with_the_secret_as_files():
    deployment = find("Deployment", "pypicache")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    (container,) = spec["containers"]
    env = env_of(container)
    names = [item["name"] for item in container["env"]]
    # The downward API's pod IP, defined before the variable that expands it.
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    port = env["PYPI_BIND"]["value"].rpartition(":")[2]
    assert env["PYPI_NODE_URL"]["value"] == f"http://$(POD_IP):{port}"
    assert names.index("POD_IP") < names.index("PYPI_NODE_URL")
    assert env["PYPI_STORAGE_URL"]["value"].startswith("s3://")
    # Every setting is one pypicache/config.py reads (or its _FILE), the secrets only as files.
    known = {variable for variable, _, _ in TABLE.values()}
    for name in names:
        if name.startswith("PYPI_"):
            assert name in known or name.removesuffix("_FILE") in known, name
    assert "PYPI_CLUSTER_SECRET" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    secret_volume = next(v for v in spec["volumes"] if "secret" in v)
    files = {item["path"] for item in secret_volume["secret"]["items"]}
    for variable in ("PYPI_CLUSTER_SECRET_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        directory, _, name = env[variable]["value"].rpartition("/")
        assert directory == mounts[secret_volume["name"]] and name in files, variable
    # Readable by the image's user: its group owns the files (fsGroup), others get nothing.
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"] == 10001
    assert secret_volume["secret"]["defaultMode"] == 0o440
    assert mounts["cache"] == "/srv/pypicache/data"
    assert spec["terminationGracePeriodSeconds"] > 30  # gunicorn's graceful_timeout


def test_probes_ask_the_health_route_on_the_port_the_server_binds():
    (container,) = find("Deployment", "pypicache")["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    bind = int(env_of(container)["PYPI_BIND"]["value"].rpartition(":")[2])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz" and ports[get["port"]] == bind, probe
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()


def test_the_services_select_the_pods_on_their_named_ports():
    for service, deployment in (("pypicache", "pypicache"), ("pypicache-s3", "pypicache-s3")):
        spec = find("Service", service)["spec"]
        template = find("Deployment", deployment)["spec"]["template"]
        assert spec["selector"].items() <= template["metadata"]["labels"].items()
        names = {port["name"] for c in template["spec"]["containers"] for port in c["ports"]}
        assert {port["targetPort"] for port in spec["ports"]} <= names
    # The pods reach the store by its Service, as the wait before their start does.
    spec = find("Deployment", "pypicache")["spec"]["template"]["spec"]
    s3 = find("Service", "pypicache-s3")["spec"]["ports"][0]["port"]
    for container in spec["initContainers"] + spec["containers"]:
        assert env_of(container)["AWS_ENDPOINT_URL"]["value"] == f"http://pypicache-s3:{s3}"


def test_z2jh_values_point_the_singleuser_pip_at_the_service():
    values = yaml.safe_load((MANIFESTS / "z2jh-values.yaml").read_text())["singleuser"]
    service = find("Service", "pypicache")
    host = service["metadata"]["name"]
    assert service["spec"]["ports"][0]["port"] == 80  # so the URLs need no port
    index = f"http://{host}/simple"
    assert values["extraEnv"]["PIP_INDEX_URL"] == values["extraEnv"]["UV_DEFAULT_INDEX"] == index
    assert values["extraEnv"]["PIP_TRUSTED_HOST"] == values["extraEnv"]["UV_INSECURE_HOST"] == host
    (pip_conf,) = values["extraFiles"].values()
    assert pip_conf["mountPath"] == "/etc/pip.conf"
    parser = configparser.ConfigParser()
    parser.read_string(pip_conf["stringData"])
    assert dict(parser["global"]) == {"index-url": index, "trusted-host": host}


def test_z2jh_network_policy_lets_singleuser_pods_reach_the_cache_pods():
    values = yaml.safe_load((MANIFESTS / "z2jh-values.yaml").read_text())["singleuser"]
    egress = values["networkPolicy"]["egress"]
    # The rules as z2jh puts them into the singleuser NetworkPolicy: valid there.
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "singleuser"},
              "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": egress}}
    assert schema_errors(policy) == []
    template = find("Deployment", "pypicache")["spec"]["template"]
    (container,) = template["spec"]["containers"]
    (rule,) = egress
    (peer,) = rule["to"]
    assert peer["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    # After the Service, traffic goes to the pods' own port: that is what the policy sees.
    assert [p["port"] for p in rule["ports"]] == [p["containerPort"] for p in container["ports"]]


def test_the_deploy_doc_shows_the_values_file_as_it_is():
    doc = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    section = doc.split("## 16. Kubernetes beside zero-to-jupyterhub", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert yaml.safe_load(block) == yaml.safe_load((MANIFESTS / "z2jh-values.yaml").read_text())
