"""The KubeRay RayService manifest matches serve/cluster.yaml, and every pod starts with the routing that spreads
traffic over every node (serve.cluster.PROXY_ENV)."""

import pytest

from conftest import ROOT

yaml = pytest.importorskip("yaml", reason="needs PyYAML (Ray's and Gradio's dependency)")


def test_rayservice_serves_the_cluster_config_with_routing_across_nodes():
    cluster = yaml.safe_load((ROOT / "serve" / "cluster.yaml").read_text())
    service = yaml.safe_load((ROOT / "serve" / "rayservice.yaml").read_text())
    assert service["kind"] == "RayService"
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == cluster
    assert cluster["proxy_location"] == "EveryNode"
    spec = service["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    containers = [container for group in groups for container in group["template"]["spec"]["containers"]]
    assert len(containers) == 2
    for container in containers:  # serve.cluster.PROXY_ENV, without importing Ray here
        assert {"name": "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING", "value": "0"} in container["env"]
        assert any(port["containerPort"] == cluster["http_options"]["port"] for port in container["ports"])
    deployment = cluster["applications"][0]["deployments"][0]
    cpus = deployment["ray_actor_options"]["num_cpus"]
    assert all(float(group["rayStartParams"]["num-cpus"]) >= cpus for group in groups)  # a replica fits each node
