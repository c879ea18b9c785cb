"""deploy/ renders (kustomize semantics) and every object validates offline against the
Kubernetes schemas; the Dockerfile's stages, user, entry point and copied paths are right."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from dockerfile_parse import DockerfileParser

from tests.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted((ROOT / "deploy" / "overlays").iterdir())
K8S_VERSION = "1.33.0"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=[o.name for o in OVERLAYS])
def test_every_rendered_object_validates_against_the_kubernetes_schemas(overlay: Path) -> None:
    objects = render(overlay)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "gantry", obj["metadata"]["name"]


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_the_control_plane_overlay_has_what_a_cluster_needs() -> None:
    objects = render(ROOT / "deploy" / "overlays" / "cluster-a")
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "Ingress", "Job", "PodDisruptionBudget", "ConfigMap",
            "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} <= kinds  # fmt: skip
    cp = next(
        o
        for o in _by_kind(objects, "Deployment")
        if o["metadata"]["name"] == "gantry-control-plane"
    )
    pod = cp["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["serve"] and container["image"] == "ghcr.io/gantry/gantry:0.1.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert (
        refs == {"gantry-secrets"}
        and container["envFrom"][0]["configMapRef"]["name"] == "gantry-config"
    )
    service = _by_kind(objects, "Service")[0]
    assert service["spec"]["ports"][0]["appProtocol"] == "kubernetes.io/h2c"
    assert _by_kind(objects, "Ingress")[0]["spec"]["rules"][0]["host"] == "gantry.localtest.me"
    assert _by_kind(objects, "Job")[0]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "migrate"
    ]


def test_a_runner_may_do_only_what_it_needs() -> None:
    objects = render(ROOT / "deploy" / "overlays" / "cluster-b")
    assert not [
        o
        for o in _by_kind(objects, "Deployment")
        if o["metadata"]["name"] == "gantry-control-plane"
    ]
    role = _by_kind(objects, "Role")[0]
    granted = {r for rule in role["rules"] for r in rule["resources"]}
    assert granted == {
        "pods",
        "pods/log",
        "services",
        "secrets",
        "persistentvolumeclaims",
        "podgroups",
    }
    cluster_role = _by_kind(objects, "ClusterRole")[0]
    assert cluster_role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
    ]
    runner = _by_kind(objects, "Deployment")[0]
    env = {e["name"]: e for e in runner["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GANTRY_EXECUTOR"]["value"] == "kubernetes"
    assert runner["spec"]["strategy"]["type"] == "Recreate"
    config = next(
        o for o in _by_kind(objects, "ConfigMap") if o["metadata"]["name"] == "gantry-runner-config"
    )
    assert config["data"]["GANTRY_BACKEND"] == "cluster-b"


def test_the_dockerfile_builds_one_non_root_image_for_both_commands(tmp_path: Path) -> None:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    stages = [i for i in parser.structure if i["instruction"] == "FROM"]
    assert len(stages) == 2, "multi-stage"
    final = parser.structure[[i["instruction"] for i in parser.structure].index("FROM", 1) :]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    assert parser.baseimage.startswith("python:3.11")
    entry = next(i["value"] for i in final if i["instruction"] == "ENTRYPOINT")
    assert '"/usr/bin/tini"' in entry and '"gantry"' in entry
    assert "tini" in parser.content and "bubblewrap" in parser.content
    for instruction in parser.structure:
        if instruction["instruction"] == "COPY" and "--from" not in instruction["value"]:
            for source in instruction["value"].split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
    # `gantry serve` and `gantry runner` are commands of the installed script.
    from app.cli import _parser

    assert _parser().parse_args(["serve"]).command == "serve"
    assert _parser().parse_args(["runner"]).command == "runner"
    # The wheel the image installs carries templates, static files, migrations and the runner.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("gantry-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("app/templates/base.html", "app/static/app.js", "app/static/vendor/htmx-2.0.11.min.js",
                   "runner/supervise.py", "runner/executors/kubernetes/executor.py", "app/spec/render_worker.py"):  # fmt: skip
        assert needed in names, needed
    assert any(n.startswith("migrations/gantry_") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)
