"""Render the kustomizations in deploy/ without the kustomize binary (none is packaged here).

Supports exactly what deploy/ uses: resources (files and directories), namespace, labels,
images, configMapGenerator with literals (with disableNameSuffixHash) and strategic-merge
patches by kind and name. Any other field is refused, so nothing is silently dropped.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images",
             "configMapGenerator", "generatorOptions", "patches"}  # fmt: skip
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
}


class Unsupported(Exception):
    pass


def render(directory: Path) -> list[dict[str, Any]]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(k) - SUPPORTED
    if unknown:
        raise Unsupported(
            f"{directory}: kustomization fields this renderer does not handle: {unknown}"
        )
    objects: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects += render(path)
        else:
            objects += [o for o in yaml.safe_load_all(path.read_text()) if o]
    options = k.get("generatorOptions") or {}
    for gen in k.get("configMapGenerator", []):
        if not options.get("disableNameSuffixHash"):
            raise Unsupported(
                "configMapGenerator needs generatorOptions.disableNameSuffixHash here"
            )
        data = dict(item.split("=", 1) for item in gen.get("literals", []))
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"]},
                "data": data,
            }
        )
    for patch in k.get("patches", []):
        body = yaml.safe_load((directory / patch["path"]).read_text())
        target = next(
            (
                o
                for o in objects
                if o["kind"] == body["kind"] and o["metadata"]["name"] == body["metadata"]["name"]
            ),
            None,
        )
        if target is None:
            raise Unsupported(f"patch {patch['path']} matches no object")
        _merge(target, body)
    for label in k.get("labels", []):
        for o in objects:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for image in k.get("images", []):
        for o in objects:
            for c in _containers(o):
                if c["image"].split(":")[0] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    if "namespace" in k:
        for o in objects:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
            for s in o.get("subjects", []):
                if s.get("kind") == "ServiceAccount":
                    s["namespace"] = k["namespace"]
    return objects


def _containers(o: dict[str, Any]) -> list[dict[str, Any]]:
    spec = o.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if "template" in spec else spec
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Strategic merge for what deploy/ patches: maps merge, lists are replaced."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
