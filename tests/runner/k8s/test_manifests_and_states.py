"""Pod manifests from launches (against a recorded expectation), and pod → task states."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.executors.kubernetes import manifests
from runner.executors.kubernetes.config import KubeSettings, KubeSettingsError
from runner.executors.kubernetes.states import pod_state
from runner.protocol import Attempt, AttemptFile, InputMount

HERE = Path(__file__).parent
SETTINGS = KubeSettings(
    namespace="gantry",
    backend="cluster-a",
    storage_class="fast-rwx",
    platforms={"dgx-h100": {"nodeSelector": {"nvidia.com/gpu.product": "H100"},
                            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}},
)  # fmt: skip


def _attempt(**kw: Any) -> Attempt:
    base = dict(
        id=42, workflow_id="train-7", group="fit", group_size=2, barrier=True, task="trainer",
        retry=0, lead=True, image="nvcr.io/nvidia/pytorch:24.01-py3",
        command=["sh", "/work/run.sh"], args=["$(EPOCHS)", "{{host:worker}}"],
        environment={"EPOCHS": "3", "PEER": "{{host:worker}}:29500"},
        files=[AttemptFile(path="/work/run.sh", contents="echo hi > /gantry/output/x\n")],
        inputs=[InputMount(index=0, task="prep", attempt=41)],
        cpu=2.5, memory=8 * 2**30, gpu=1, storage=2**30, platform="dgx-h100",
        hosts=["trainer", "worker"],
    )  # fmt: skip
    base.update(kw)
    return Attempt(**base)  # type: ignore[arg-type]


def test_the_pod_of_an_attempt_matches_the_recorded_manifest() -> None:
    pod = manifests.pod(_attempt(), 3, SETTINGS)
    expected = json.loads((HERE / "expected_pod.json").read_text())
    assert pod == expected


def test_group_objects_and_gang_scheduling() -> None:
    a = _attempt()
    secret = manifests.files_secret([a], SETTINGS)
    assert secret is not None and secret["data"] == {"42-0": "ZWNobyBoaSA+IC9nYW50cnkvb3V0cHV0L3gK"}
    service = manifests.group_service(a, SETTINGS)
    assert service["spec"]["clusterIP"] == "None" and service["metadata"][
        "name"
    ] == manifests.service_name(a)
    assert manifests.pod_group(a, SETTINGS) is None
    cosched = KubeSettings(namespace="gantry", backend="b", gang="coscheduling")
    group = manifests.pod_group(a, cosched)
    assert group is not None and group["spec"] == {"minMember": 2}
    assert (
        manifests.pod(a, 1, cosched)["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"]
        == group["metadata"]["name"]
    )
    kai = KubeSettings(namespace="gantry", backend="b", gang="kai", kai_queue="research")
    kai_group = manifests.pod_group(a, kai)
    assert kai_group is not None and kai_group["apiVersion"] == "scheduling.run.ai/v2alpha2"
    kai_pod = manifests.pod(a, 1, kai)
    assert kai_pod["spec"]["schedulerName"] == "kai-scheduler"
    assert kai_pod["metadata"]["annotations"]["pod-group-name"] == kai_group["metadata"]["name"]
    claim = manifests.data_claim("train-7", SETTINGS)
    assert claim["spec"]["storageClassName"] == "fast-rwx" and claim["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]


def test_settings_are_checked() -> None:
    with pytest.raises(KubeSettingsError, match="GANTRY_K8S_GANG"):
        KubeSettings.from_env({"GANTRY_K8S_GANG": "volcano"}, "b")
    with pytest.raises(KubeSettingsError, match="JSON"):
        KubeSettings.from_env({"GANTRY_K8S_PLATFORMS": "{nope"}, "b")
    with pytest.raises(KubeSettingsError, match=r"\['dgx'\] has 'node_selector'"):
        KubeSettings.from_env({"GANTRY_K8S_PLATFORMS": '{"dgx": {"node_selector": {}}}'}, "b")
    with pytest.raises(KubeSettingsError, match=r"\['dgx'\]\.tolerations must be a JSON list"):
        KubeSettings.from_env({"GANTRY_K8S_PLATFORMS": '{"dgx": {"tolerations": {}}}'}, "b")
    assert KubeSettings.from_env({"GANTRY_K8S_NAMESPACE": "ml"}, "b").namespace == "ml"


def _pod(
    phase: str, container: dict[str, Any] | None = None, node: str | None = "n1", **status: Any
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "metadata": {"name": "p", "labels": {}},
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, **status},
    }
    if container is not None:
        pod["status"]["containerStatuses"] = [{"name": "task", "state": container}]
    return pod


SETTINGS_FAST = KubeSettings(namespace="n", backend="b", image_pull_grace=60)


@pytest.mark.parametrize(
    ("pod", "phase", "status", "exit_code", "words"),
    [
        (
            _pod("Pending", node=None, conditions=[{"type": "PodScheduled", "status": "False"}]),
            "pending",
            None,
            None,
            "",
        ),
        (
            _pod("Pending", {"waiting": {"reason": "ContainerCreating"}}),
            "initializing",
            None,
            None,
            "",
        ),
        (_pod("Running", {"running": {"startedAt": "t"}}), "running", None, None, ""),
        (
            _pod("Succeeded", {"terminated": {"exitCode": 0, "reason": "Completed"}}),
            "ended",
            None,
            0,
            "",
        ),
        (_pod("Failed", {"terminated": {"exitCode": 3, "reason": "Error"}}), "ended", None, 3, ""),
        (_pod("Running", {"terminated": {"exitCode": 2, "reason": "Error"}}), "ended", None, 2, ""),
        (
            _pod("Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
            "ended",
            "FAILED_EVICTED",
            137,
            "memory",
        ),
        (
            _pod("Failed", reason="Evicted", message="The node was low on resource: memory."),
            "ended",
            "FAILED_EVICTED",
            3004,
            "low on resource",
        ),
        (
            _pod(
                "Failed",
                {
                    "terminated": {
                        "exitCode": 128,
                        "reason": "StartError",
                        "message": "exec: not found",
                    }
                },
            ),
            "ended",
            "FAILED_START_ERROR",
            128,
            "not found",
        ),
        (
            _pod("Pending", {"waiting": {"reason": "InvalidImageName", "message": "bad"}}),
            "ended",
            "FAILED_IMAGE_PULL",
            None,
            "invalid",
        ),
        (
            _pod(
                "Running",
                {"running": {}},
                conditions=[
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "PreemptionByScheduler",
                        "message": "preempted by a higher priority pod",
                    }
                ],
            ),
            "ended",
            "FAILED_PREEMPTED",
            3006,
            "higher priority",
        ),
        (
            _pod(
                "Failed",
                conditions=[
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "DeletionByTaintManager",
                        "message": "node tainted",
                    }
                ],
            ),
            "ended",
            "FAILED_BACKEND_ERROR",
            3001,
            "tainted",
        ),
        (
            _pod("Failed", reason="UnexpectedAdmissionError", message="GPU gone"),
            "ended",
            "FAILED_BACKEND_ERROR",
            3001,
            "GPU gone",
        ),
        (None, "ended", "FAILED_BACKEND_ERROR", None, "disappeared"),
    ],
)
def test_pod_states_map_the_way_osmo_does(
    pod: dict[str, Any] | None, phase: str, status: str | None, exit_code: int | None, words: str
) -> None:
    state = pod_state(pod, 1000.0, {}, SETTINGS_FAST)
    assert (state.phase, state.status, state.exit_code) == (phase, status, exit_code)
    assert words in (state.reason or "")


def test_image_pull_failures_wait_out_a_grace_first() -> None:
    seen: dict[str, float] = {}
    pulling = _pod("Pending", {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}})
    assert pod_state(pulling, 1000.0, seen, SETTINGS_FAST).phase == "initializing"
    assert pod_state(pulling, 1059.0, seen, SETTINGS_FAST).phase == "initializing"
    late = pod_state(pulling, 1061.0, seen, SETTINGS_FAST)
    assert late.status == "FAILED_IMAGE_PULL" and "not found" in (late.reason or "")
