"""Check the parsed YAML of a spec field by field and build a ``WorkflowSpec``.

Every field OSMO defines is recognised. Fields Gantry does not execute yet are refused by name
with the reason; unknown fields are refused with the closest known name. All issues are
collected, so one answer lists everything to fix.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from app.spec.errors import Path, SpecError, SpecIssue, format_path
from app.spec.model import FileSpec, GroupSpec, InputSpec, Resources, TaskSpec, WorkflowSpec
from app.spec.quantities import (
    QuantityError,
    parse_bytes,
    parse_cpu,
    parse_duration,
    parse_gpu,
)
from app.spec.source import Loaded

__all__ = ("NAME_RE", "normalise_name", "validate")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_LABEL_KEY = re.compile(
    r"^(?:[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")

_WORKFLOW_KEYS = {"name", "pool", "labels", "timeout", "resources", "tasks", "groups", "backend"}
_GROUP_KEYS = {"name", "tasks", "barrier", "ignoreNonleadStatus"}
_TASK_KEYS = {
    "name", "image", "command", "args", "environment", "files", "inputs", "outputs", "lead",
    "resource", "resources", "exitActions", "credentials", "checkpoint", "volumeMounts",
    "privileged", "hostNetwork", "kpis", "downloadType", "cacheSize",
}  # fmt: skip
_RESOURCE_KEYS = {"cpu", "gpu", "memory", "storage", "platform", "nodesExcluded", "topology"}
_FILE_KEYS = {"path", "contents", "base64", "localpath"}
_TIMEOUT_KEYS = {"exec_timeout", "queue_timeout"}

_NO_DATA_PLANE = "Gantry has no object-storage data plane yet"
# Fields Gantry recognises but does not execute yet: refused by name, never ignored.
_UNSUPPORTED_TASK_FIELDS = {
    "outputs": f"`outputs` to URLs are not supported yet ({_NO_DATA_PLANE}); files a task writes "
    "under {{output}} already reach downstream tasks through `task:` inputs. Remove `outputs`",
    "exitActions": "`exitActions` are not executed yet; remove them (the exit code decides: "
    "0 is COMPLETED, anything else FAILED)",
    "credentials": "`credentials` are not supported yet (Gantry has no credential store); "
    "remove them",
    "checkpoint": f"`checkpoint` is not supported yet ({_NO_DATA_PLANE}); remove it",
    "volumeMounts": "`volumeMounts` (host path mounts) are not supported yet; remove them",
    "privileged": "privileged containers are not supported yet; remove `privileged: true`",
    "hostNetwork": "host networking is not supported yet; remove `hostNetwork: true`",
    "kpis": "`kpis` are not supported yet; remove them",
    "downloadType": f"`downloadType` is not supported yet ({_NO_DATA_PLANE}); remove it",
    "cacheSize": f"`cacheSize` is not supported yet ({_NO_DATA_PLANE}); remove it",
}
_UNSUPPORTED_RESOURCE_FIELDS = {
    "nodesExcluded": "`nodesExcluded` is not supported yet; remove it",
    "topology": "`topology` requirements are not supported yet; remove them",
}


def normalise_name(name: str) -> str:
    """Names are unique case-insensitively with ``-`` and ``_`` equal, as in OSMO."""
    return name.lower().replace("_", "-")


def validate(loaded: Loaded) -> WorkflowSpec:
    """Build the spec from parsed YAML, or raise ``SpecError`` listing every issue."""
    checker = _Checker(loaded)
    spec = checker.document(loaded.data)
    if checker.issues or spec is None:
        raise SpecError(checker.issues)
    return spec


class _Checker:
    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.issues: list[SpecIssue] = []

    # -- helpers -------------------------------------------------------------------------

    def fail(self, path: Path, message: str) -> None:
        where = format_path(path) or "spec"  # the document itself: a whole-spec refusal
        self.issues.append(SpecIssue(where, self.loaded.line(path), message))

    def mapping(self, value: Any, path: Path, what: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.fail(path, f"{what} must be a mapping of keys to values, not {_kind(value)}")
        return None

    def keys(self, obj: dict[str, Any], path: Path, known: set[str], what: str) -> None:
        for key in obj:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known fields: {_list(known)}"
            self.fail((*path, key), f"unknown field '{key}' in {what}{hint}")

    def string(
        self, value: Any, path: Path, what: str, *, allow_scalars: bool = True
    ) -> str | None:
        if isinstance(value, str):
            return value
        if allow_scalars and isinstance(value, int | float | bool) and value is not None:
            # Keep the text as written: `22.04` stays "22.04", not 22.04 the float.
            return self.loaded.raw.get(path, str(value))
        self.fail(path, f"{what} must be a string, not {_kind(value)}")
        return None

    def string_list(self, value: Any, path: Path, what: str) -> list[str] | None:
        if not isinstance(value, list):
            self.fail(path, f'{what} must be a list of strings, such as ["sh", "-c"]')
            return None
        out = []
        for i, item in enumerate(value):
            s = self.string(item, (*path, i), f"each item of {what}")
            if s is not None:
                out.append(s)
        return out

    def boolean(self, value: Any, path: Path, what: str) -> bool | None:
        if isinstance(value, bool):
            return value
        self.fail(path, f"{what} must be true or false, not {value!r}")
        return None

    def name(self, value: Any, path: Path, what: str) -> str | None:
        s = self.string(value, path, what)
        if s is None:
            return None
        if not NAME_RE.match(s):
            self.fail(
                path,
                f"{what} {s!r} is not a valid name: use 1 to 63 letters, digits, '-' or '_', "
                "starting with a letter or digit",
            )
            return None
        return s

    # -- sections ------------------------------------------------------------------------

    def document(self, data: Any) -> WorkflowSpec | None:
        if data is None:
            self.fail((), "the spec is empty; it needs a `workflow` section")
            return None
        doc = self.mapping(data, (), "the spec")
        if doc is None:
            return None
        self.keys(doc, (), {"version", "workflow", "default-values"}, "the spec")
        if "version" in doc and doc["version"] not in (2, "2"):
            self.fail(
                ("version",), f"version {doc['version']!r} is not supported; use `version: 2`"
            )
        if "workflow" not in doc:
            self.fail((), "the spec has no `workflow` section")
            return None
        return self.workflow(doc["workflow"], ("workflow",))

    def workflow(self, data: Any, path: Path) -> WorkflowSpec | None:
        wf = self.mapping(data, path, "`workflow`")
        if wf is None:
            return None
        self.keys(wf, path, _WORKFLOW_KEYS, "`workflow`")
        name = None
        if "name" not in wf:
            self.fail(path, "the workflow has no `name`; add `name: my-workflow`")
        else:
            name = self.name(wf["name"], (*path, "name"), "the workflow name")
        if "backend" in wf:
            self.fail(
                (*path, "backend"),
                "`backend` is chosen by Gantry from the pool; remove it and choose a `pool`",
            )
        pool = None
        if wf.get("pool") is not None:
            pool = self.name(wf["pool"], (*path, "pool"), "the pool name")
        labels = self.labels(wf.get("labels"), (*path, "labels"))
        exec_timeout = queue_timeout = None
        if wf.get("timeout") is not None:
            exec_timeout, queue_timeout = self.timeout(wf["timeout"], (*path, "timeout"))
        resources: dict[str, Resources] = {}
        if wf.get("resources") is not None:
            rmap = self.mapping(wf["resources"], (*path, "resources"), "`resources`")
            for rname, rspec in (rmap or {}).items():
                res = self.resources(rspec, (*path, "resources", rname))
                if res is not None:
                    resources[str(rname)] = res
        groups = self.groups_or_tasks(wf, path)
        if name is None or groups is None:
            return None
        return WorkflowSpec(
            name=name,
            groups=groups,
            pool=pool,
            labels=labels,
            resources=resources,
            exec_timeout=exec_timeout,
            queue_timeout=queue_timeout,
        )

    def labels(self, data: Any, path: Path) -> dict[str, str]:
        if data is None:
            return {}
        labels = self.mapping(data, path, "`labels`")
        if labels is None:
            return {}
        if len(labels) > 16:
            self.fail(path, f"a workflow may have at most 16 labels, this one has {len(labels)}")
        out = {}
        for key, value in labels.items():
            kpath = (*path, key)
            text = self.string(value, kpath, f"label '{key}'")
            if not _LABEL_KEY.match(str(key)):
                self.fail(kpath, f"label key '{key}' is not a valid Kubernetes label key")
            elif text is not None and not _LABEL_VALUE.match(text):
                self.fail(
                    kpath,
                    f"label value {text!r} is not valid: at most 63 letters, digits, '-', '_' "
                    "or '.', starting and ending with a letter or digit",
                )
            elif text is not None:
                out[str(key)] = text
        return out

    def timeout(self, data: Any, path: Path) -> tuple[int | None, int | None]:
        t = self.mapping(data, path, "`timeout`")
        if t is None:
            return None, None
        self.keys(t, path, _TIMEOUT_KEYS, "`timeout`")
        result: list[int | None] = []
        for key in ("exec_timeout", "queue_timeout"):
            value = t.get(key)
            if value is None:
                result.append(None)
                continue
            try:
                result.append(parse_duration(value, key))
            except QuantityError as exc:
                self.fail((*path, key), str(exc))
                result.append(None)
        return result[0], result[1]

    def resources(self, data: Any, path: Path) -> Resources | None:
        r = self.mapping(data, path, "a resource spec")
        if r is None:
            return None
        self.keys(r, path, _RESOURCE_KEYS, "a resource spec")
        for key, message in _UNSUPPORTED_RESOURCE_FIELDS.items():
            if r.get(key):
                self.fail((*path, key), message)
        ok = True
        cpu = gpu = memory = storage = None
        platform = None
        try:
            cpu = parse_cpu(r["cpu"]) if r.get("cpu") is not None else None
        except QuantityError as exc:
            self.fail((*path, "cpu"), str(exc))
            ok = False
        if r.get("gpu") is not None:
            try:
                gpu = parse_gpu(r["gpu"])
            except QuantityError as exc:
                self.fail((*path, "gpu"), str(exc))
                ok = False
        for key in ("memory", "storage"):
            if r.get(key) is None:
                continue
            try:
                value = parse_bytes(r[key], key)
            except QuantityError as exc:
                self.fail((*path, key), str(exc))
                ok = False
                continue
            if key == "memory":
                memory = value
            else:
                storage = value
        if r.get("platform") is not None:
            platform = self.string(r["platform"], (*path, "platform"), "platform")
        if not ok:
            return None
        return Resources(cpu=cpu, gpu=gpu, memory=memory, storage=storage, platform=platform)

    def groups_or_tasks(self, wf: dict[str, Any], path: Path) -> list[GroupSpec] | None:
        has_tasks, has_groups = wf.get("tasks") is not None, wf.get("groups") is not None
        if has_tasks and has_groups:
            self.fail(
                (*path, "groups"),
                "a workflow has either `tasks` or `groups`, not both; move the tasks into a group",
            )
            return None
        if not has_tasks and not has_groups:
            self.fail(path, "the workflow has no `tasks` (or `groups`); add at least one task")
            return None
        if has_tasks:
            tpath = (*path, "tasks")
            items = wf["tasks"]
            if not isinstance(items, list) or not items:
                self.fail(tpath, "`tasks` must be a non-empty list of tasks")
                return None
            groups = []
            for i, item in enumerate(items):
                task = self.task(item, (*tpath, i))
                if task is not None:
                    task.lead = True  # a bare task is the lead of its own one-task group
                    groups.append(GroupSpec(name=task.name, tasks=[task], source=(*tpath, i)))
            return groups
        gpath = (*path, "groups")
        items = wf["groups"]
        if not isinstance(items, list) or not items:
            self.fail(gpath, "`groups` must be a non-empty list of groups")
            return None
        groups = []
        for i, item in enumerate(items):
            group = self.group(item, (*gpath, i))
            if group is not None:
                groups.append(group)
        return groups

    def group(self, data: Any, path: Path) -> GroupSpec | None:
        g = self.mapping(data, path, "a group")
        if g is None:
            return None
        self.keys(g, path, _GROUP_KEYS, "a group")
        name = None
        if "name" not in g:
            self.fail(path, "the group has no `name`")
        else:
            name = self.name(g["name"], (*path, "name"), "the group name")
        barrier = ignore = True
        if g.get("barrier") is not None:
            barrier = self.boolean(g["barrier"], (*path, "barrier"), "`barrier`") is not False
        if g.get("ignoreNonleadStatus") is not None:
            value = self.boolean(
                g["ignoreNonleadStatus"], (*path, "ignoreNonleadStatus"), "`ignoreNonleadStatus`"
            )
            ignore = value is not False
        tpath = (*path, "tasks")
        items = g.get("tasks")
        if not isinstance(items, list) or not items:
            self.fail(tpath if "tasks" in g else path, "a group needs a non-empty list of `tasks`")
            return None
        tasks = [t for i, item in enumerate(items) if (t := self.task(item, (*tpath, i)))]
        if name is None or len(tasks) != len(items):
            return None
        leads = [t for t in tasks if t.lead]
        if len(tasks) == 1:
            tasks[0].lead = True
        elif not leads:
            self.fail(path, f"group '{name}' has no lead task; mark exactly one with `lead: true`")
        elif len(leads) > 1:
            self.fail(
                leads[1].source,
                f"group '{name}' has {len(leads)} lead tasks ({', '.join(t.name for t in leads)}); "
                "exactly one task may have `lead: true`",
            )
        return GroupSpec(
            name=name, tasks=tasks, barrier=barrier, ignore_nonlead=ignore, source=path
        )

    def task(self, data: Any, path: Path) -> TaskSpec | None:
        t = self.mapping(data, path, "a task")
        if t is None:
            return None
        self.keys(t, path, _TASK_KEYS, "a task")
        for key, message in _UNSUPPORTED_TASK_FIELDS.items():
            if t.get(key):  # `privileged: false` or `exitActions: {}` ask for nothing
                self.fail((*path, key), message)
        name = image = None
        if "name" not in t:
            self.fail(path, "the task has no `name`")
        else:
            name = self.name(t["name"], (*path, "name"), "the task name")
        label = f"task '{name}'" if name else "the task"
        if t.get("image") is None:
            self.fail(path, f"{label} has no `image`; add one, such as `image: ubuntu:24.04`")
        else:
            image = self.string(t["image"], (*path, "image"), "`image`")
            if image is not None and not image.strip():
                self.fail((*path, "image"), f"`image` of {label} is empty; name one, such as "
                          "`image: ubuntu:24.04`")  # fmt: skip
        command: list[str] | None = None
        if "command" not in t or t["command"] is None:
            self.fail(path, f'{label} has no `command`; add one, such as `command: ["sh", "-c"]`')
        else:
            command = self.string_list(t["command"], (*path, "command"), "`command`")
            if command is not None and not command:
                self.fail(
                    (*path, "command"),
                    f"`command` of {label} is empty; give the program to run, "
                    'such as `command: ["echo"]`',
                )
                command = None
            elif command is not None and not command[0].strip():
                self.fail((*path, "command", 0), "the program to run must not be blank")
                command = None
        args: list[str] = []
        if t.get("args") is not None:
            args = self.string_list(t["args"], (*path, "args"), "`args`") or []
        env = self.environment(t.get("environment"), (*path, "environment"))
        files = self.files(t.get("files"), (*path, "files"))
        inputs = self.inputs(t.get("inputs"), (*path, "inputs"))
        lead = False
        if t.get("lead") is not None:
            lead = self.boolean(t["lead"], (*path, "lead"), "`lead`") is True
        resource = None
        if t.get("resource") is not None:
            resource = self.string(t["resource"], (*path, "resource"), "`resource`")
        resources = None
        if t.get("resources") is not None:
            resources = self.resources(t["resources"], (*path, "resources"))
        if name is None or image is None or command is None:
            return None
        return TaskSpec(
            name=name,
            image=image,
            command=command,
            args=args,
            environment=env,
            files=files,
            inputs=inputs,
            lead=lead,
            resource=resource,
            resources=resources,
            source=path,
        )

    def environment(self, data: Any, path: Path) -> dict[str, str]:
        if data is None:
            return {}
        env = self.mapping(data, path, "`environment`")
        out: dict[str, str] = {}
        for key, value in (env or {}).items():
            kpath = (*path, key)
            if not _ENV_NAME.match(str(key)):
                self.fail(kpath, f"'{key}' is not a valid environment variable name")
                continue
            if value is None:
                self.fail(
                    kpath, f"environment variable '{key}' has no value; give it one or remove it"
                )
                continue
            text = self.string(value, kpath, f"environment variable '{key}'")
            if text is not None:
                out[str(key)] = text
        return out

    def files(self, data: Any, path: Path) -> list[FileSpec]:
        if data is None:
            return []
        if not isinstance(data, list):
            self.fail(path, "`files` must be a list of {path, contents}")
            return []
        out = []
        for i, item in enumerate(data):
            fpath = (*path, i)
            f = self.mapping(item, fpath, "a file")
            if f is None:
                continue
            self.keys(f, fpath, _FILE_KEYS, "a file")
            target = f.get("path")
            if target is None:
                self.fail(fpath, "the file has no `path`; give where it goes, such as /tmp/run.sh")
                continue
            target = self.string(target, (*fpath, "path"), "the file path")
            if target is None:
                continue
            if not target.startswith("/") or "/../" in f"{target}/" or target.rstrip("/") == "":
                self.fail(
                    (*fpath, "path"), f"file path {target!r} must be absolute, like /tmp/run.sh"
                )
                continue
            if target == "/gantry" or target.startswith("/gantry/"):
                self.fail(
                    (*fpath, "path"), "paths under /gantry are reserved for inputs and outputs"
                )
                continue
            if f.get("localpath") is not None:
                self.fail(
                    (*fpath, "localpath"),
                    f"`localpath: {f['localpath']}` names a file on the submitter's machine, which "
                    "the server cannot read; put its text in `contents` (a CLI inlines it for you)",
                )
                continue
            if "contents" not in f or f["contents"] is None:
                self.fail(fpath, f"file {target} has no `contents`")
                continue
            contents = self.string(f["contents"], (*fpath, "contents"), "`contents`")
            b64 = False
            if f.get("base64") is not None:
                b64 = self.boolean(f["base64"], (*fpath, "base64"), "`base64`") is True
            if contents is not None:
                if b64:
                    import base64
                    import binascii

                    try:
                        base64.b64decode(contents, validate=True)
                    except (binascii.Error, ValueError):
                        self.fail((*fpath, "contents"), "`contents` is not valid base64")
                        continue
                out.append(FileSpec(path=target, contents=contents, base64=b64))
        seen: dict[str, int] = {}
        for i, fs in enumerate(out):
            if fs.path in seen:
                self.fail((*path, i, "path"), f"two files have the same path {fs.path}")
            seen[fs.path] = i
        return out

    def inputs(self, data: Any, path: Path) -> list[InputSpec]:
        if data is None:
            return []
        if not isinstance(data, list):
            self.fail(path, "`inputs` must be a list such as [{task: prepare}]")
            return []
        out = []
        for i, item in enumerate(data):
            ipath = (*path, i)
            inp = self.mapping(item, ipath, "an input")
            if inp is None:
                continue
            self.keys(inp, ipath, {"task", "url", "regex"}, "an input")
            if "url" in inp:
                self.fail(
                    (*ipath, "url"),
                    f"`url:` inputs are not supported yet ({_NO_DATA_PLANE}); "
                    "use `task:` inputs between tasks of the workflow",
                )
                continue
            if inp.get("regex") is not None:
                self.fail(
                    (*ipath, "regex"), "input `regex` filters are not supported yet; remove it"
                )
            if "task" not in inp:
                self.fail(ipath, "an input needs `task: <name of an upstream task>`")
                continue
            task = self.string(inp["task"], (*ipath, "task"), "the input task")
            if task is None:
                continue
            if ":" in task:
                self.fail(
                    (*ipath, "task"),
                    f"inputs from another workflow ('{task}') are not supported yet; "
                    "name a task of this workflow",
                )
                continue
            out.append(InputSpec(task=task, source=(*ipath, "task")))
        return out


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )


def _list(names: set[str]) -> str:
    return ", ".join(sorted(names))
