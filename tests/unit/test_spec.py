"""The spec: parsing with lines, templating, validation and planning (no I/O but the renderer)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from app.spec.errors import SpecError
from app.spec.parse import parse_spec
from app.spec.plan import substitute_tokens
from app.spec.template import TemplateRenderer


@pytest.fixture(scope="module")
def renderer() -> Iterator[TemplateRenderer]:
    r = TemplateRenderer(timeout=2.0)
    yield r
    r.close()


def refuse(text: str, renderer: TemplateRenderer | None = None, **kw: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(text, kw.get("set_values"), renderer)  # type: ignore[arg-type]
    return info.value


def issue(err: SpecError, path: str) -> tuple[int | None, str]:
    for i in err.issues:
        if i.path == path:
            return i.line, i.message
    raise AssertionError(f"no issue at {path}: {[(i.path, i.message) for i in err.issues]}")


SIMPLE = """\
workflow:
  name: demo
  tasks:
  - name: a
    image: ubuntu
    command: [echo, hi]
"""


def test_bare_tasks_become_one_task_groups_with_dependencies_from_inputs() -> None:
    spec = (
        SIMPLE
        + """\
  - name: b
    image: ubuntu
    command: [cat, "{{input:0}}/x"]
    inputs:
    - task: a
"""
    )
    plan = parse_spec(spec, None, None).plan
    assert [g.name for g in plan.groups] == ["a", "b"]
    assert plan.groups[1].upstream == [0]
    assert plan.groups[1].tasks[0].lead
    assert plan.groups[1].tasks[0].inputs == ["a"]


def test_missing_and_empty_command_are_refused_with_path_and_line() -> None:
    err = refuse(SIMPLE.replace("    command: [echo, hi]\n", ""))
    line, message = issue(err, "workflow.tasks[0]")
    assert line == 4 and "no `command`" in message
    err = refuse(SIMPLE.replace("[echo, hi]", "[]"))
    line, message = issue(err, "workflow.tasks[0].command")
    assert line == 6 and "empty" in message


def test_an_empty_image_is_refused() -> None:
    line, message = issue(
        refuse(SIMPLE.replace("image: ubuntu", 'image: "  "')), "workflow.tasks[0].image"
    )
    assert line == 5 and "empty" in message


def test_every_problem_of_a_spec_is_reported_at_once() -> None:
    """Issue 9 ("every error at once"): three problems took three rounds of Validate."""
    spec = (
        "workflow:\n  name: three\n  tasks:\n"
        "  - {name: a, image: x, command: [echo], bogus: 1}\n"
        "  - {name: b, command: [echo], resources: {cpu: -1}}\n"
        "  - {name: c, image: x, command: []}\n"
    )
    err = refuse(spec)
    assert sorted(i.path for i in err.issues) == [
        "workflow.tasks[0].bogus", "workflow.tasks[1]", "workflow.tasks[1].resources.cpu",
        "workflow.tasks[2].command",
    ]  # fmt: skip
    assert all(i.line for i in err.issues)


def test_unknown_field_suggests_the_closest_name() -> None:
    err = refuse(
        SIMPLE.replace("    image: ubuntu\n", "    image: ubuntu\n    enviroment: {A: b}\n")
    )
    line, message = issue(err, "workflow.tasks[0].enviroment")
    assert line == 6 and "did you mean 'environment'" in message


@pytest.mark.parametrize(
    ("field", "value", "word"),
    [
        ("credentials", "{x: /y}", "credentials"),
        ("checkpoint", "[{path: /a, url: 's3://b', frequency: 1}]", "checkpoint"),
        ("exitActions", "{COMPLETE: 15}", "exitActions"),
        ("volumeMounts", "['/dev/shm']", "volumeMounts"),
        ("privileged", "true", "privileged"),
        ("hostNetwork", "true", "host networking"),
        ("kpis", "[{index: 1, path: /x}]", "kpis"),
        ("outputs", "[{url: 's3://b'}]", "outputs"),
    ],
)
def test_fields_not_executed_yet_are_refused_by_name(field: str, value: str, word: str) -> None:
    err = refuse(SIMPLE + f"    {field}: {value}\n")
    _, message = issue(err, f"workflow.tasks[0].{field}")
    assert word in message and "not" in message


def test_false_or_empty_values_of_unsupported_fields_ask_for_nothing() -> None:
    parse_spec(SIMPLE + "    privileged: false\n    volumeMounts: []\n", None, None)


def test_url_inputs_and_localpath_are_refused_naming_them() -> None:
    err = refuse(SIMPLE + "    inputs:\n    - url: s3://bucket/data\n")
    assert "not supported yet" in issue(err, "workflow.tasks[0].inputs[0].url")[1]
    err = refuse(SIMPLE + "    files:\n    - path: /tmp/x.sh\n      localpath: scripts/x.sh\n")
    line, message = issue(err, "workflow.tasks[0].files[0].localpath")
    assert line == 9 and "scripts/x.sh" in message


@pytest.mark.parametrize(
    ("resources", "path", "word"),
    [
        ("cpu: lots", "cpu", "cores"),
        ("memory: 12XB", "memory", "512Mi"),
        ("storage: -1Gi", "storage", "quantity"),
        ("gpu: 1.5", "gpu", "whole number"),
    ],
)
def test_bad_quantities_are_refused(resources: str, path: str, word: str) -> None:
    spec = SIMPLE.replace("  tasks:", f"  resources:\n    default:\n      {resources}\n  tasks:")
    err = refuse(spec)
    line, message = issue(err, f"workflow.resources.default.{path}")
    assert line == 5 and word in message


def test_timeouts_parse_and_mixed_units_are_refused() -> None:
    plan = parse_spec(
        SIMPLE + "  timeout:\n    exec_timeout: 2m\n    queue_timeout: 1h\n", None, None
    ).plan
    assert (plan.exec_timeout, plan.queue_timeout) == (120, 3600)
    err = refuse(SIMPLE + "  timeout:\n    exec_timeout: 1h30m\n")
    assert "cannot be mixed" in issue(err, "workflow.timeout.exec_timeout")[1]


def test_duplicate_names_ignore_case_and_dash_underscore() -> None:
    err = refuse(SIMPLE + "  - name: A\n    image: x\n    command: [true]\n")
    assert "used twice" in issue(err, "workflow.tasks[1].name")[1]
    err = refuse(
        SIMPLE.replace("name: a", "name: my-task")
        + "  - name: My_Task\n    image: x\n    command: [true]\n"
    )
    assert "used twice" in issue(err, "workflow.tasks[1].name")[1]


def test_unknown_input_task_and_cycles_are_refused() -> None:
    err = refuse(SIMPLE + "    inputs:\n    - task: nope\n")
    line, message = issue(err, "workflow.tasks[0].inputs[0].task")
    assert line == 8 and "does not exist" in message
    cyclic = """\
workflow:
  name: loop
  tasks:
  - {name: a, image: x, command: [true], inputs: [{task: b}]}
  - {name: b, image: x, command: [true], inputs: [{task: a}]}
"""
    err = refuse(cyclic)
    assert any("cycle" in i.message for i in err.issues)


def test_input_from_own_group_and_group_without_lead_are_refused() -> None:
    spec = """\
workflow:
  name: g
  groups:
  - name: one
    tasks:
    - {name: a, image: x, command: [true]}
    - {name: b, image: x, command: [true], inputs: [{task: a}]}
"""
    err = refuse(spec)
    assert "no lead" in issue(err, "workflow.groups[0]")[1]
    err = refuse(spec.replace("{name: a,", "{name: a, lead: true,"))
    assert "own group" in issue(err, "workflow.groups[0].tasks[1].inputs[0].task")[1]


def test_tokens_are_checked_and_substituted() -> None:
    err = refuse(SIMPLE.replace("[echo, hi]", '[cat, "{{input:1}}"]'))
    assert "no `inputs`" in issue(err, "workflow.tasks[0].command[1]")[1]
    plan = parse_spec(
        SIMPLE.replace("[echo, hi]", '["{{output}}", "{{workflow_id}}"]'), None, None
    ).plan
    command = [substitute_tokens(s, "demo-7") for s in plan.groups[0].tasks[0].command]
    assert command == ["/gantry/output", "demo-7"]


def test_host_token_must_name_a_task_of_the_same_group() -> None:
    spec = """\
workflow:
  name: h
  groups:
  - name: one
    tasks:
    - {name: server, lead: true, image: x, command: [sleep, "1"]}
    - {name: client, image: x, command: [ping, "{{host:server}}"]}
  - name: two
    tasks:
    - {name: other, image: x, command: [ping, "{{host:server}}"]}
"""
    err = refuse(spec)
    assert len(err.issues) == 1
    assert "another group" in issue(err, "workflow.groups[1].tasks[0].command[1]")[1]


def test_duplicate_keys_same_value_accepted_different_refused() -> None:
    parse_spec(SIMPLE + "    image: ubuntu\n", None, None)
    err = refuse(SIMPLE + "    image: debian\n")
    line, message = issue(err, "workflow.tasks[0].image")
    assert line == 7 and "twice" in message


def test_invalid_yaml_names_the_line() -> None:
    err = refuse(SIMPLE + "    args: [unclosed\n  bad: : :\n")
    assert err.issues[0].line is not None and "not valid YAML" in err.issues[0].message


def test_scalar_text_is_kept_as_written() -> None:
    spec = SIMPLE + "    args: [22.04, 010]\n    environment:\n      V: 1.10\n"
    task = parse_spec(spec, None, None).plan.groups[0].tasks[0]
    assert task.args == ["22.04", "010"] and task.environment == {"V": "1.10"}


TEMPLATED = """\
workflow:
  name: {{name}}
  tasks:
  - name: hello
    image: ubuntu
    command: ["echo", "{{message}}", "{{output}}"]
default-values:
  name: templated
  message: from defaults
"""


def test_default_values_are_overridden_by_set(renderer: TemplateRenderer) -> None:
    plan = parse_spec(TEMPLATED, None, renderer).plan
    assert plan.name == "templated"
    assert plan.groups[0].tasks[0].command == ["echo", "from defaults", "{{output}}"]
    plan = parse_spec(TEMPLATED, {"message": "from set"}, renderer).plan
    assert plan.groups[0].tasks[0].command[1] == "from set"


def test_undefined_variables_and_unused_set_names_are_refused(renderer: TemplateRenderer) -> None:
    err = refuse(TEMPLATED.replace("{{message}}", "{{missing}}"), renderer)
    assert err.issues[0].line == 6 and "missing" in err.issues[0].message
    err = refuse(TEMPLATED, renderer, set_values={"mesage": "typo"})
    assert err.issues[0].path == "set.mesage"


def test_template_that_escapes_the_sandbox_is_refused(renderer: TemplateRenderer) -> None:
    err = refuse(SIMPLE.replace("[echo, hi]", "[\"{{ ''.__class__.__mro__ }}\"]"), renderer)
    assert "sandbox" in err.issues[0].message


def test_runaway_template_is_stopped_in_time(renderer: TemplateRenderer) -> None:
    spec = SIMPLE.replace(
        "[echo, hi]",
        '["{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"]',
    )
    started = time.monotonic()
    err = refuse(spec, renderer)
    assert "longer than 2 s" in err.issues[0].message
    assert time.monotonic() - started < 6
    # The pool replaced the killed worker: the next render works.
    assert parse_spec(TEMPLATED, None, renderer).plan.name == "templated"


def test_lines_after_a_loop_still_point_at_the_submitted_text(renderer: TemplateRenderer) -> None:
    spec = """\
workflow:
  name: loops
  tasks:
{% for i in range(3) %}
  - name: t{{i}}
    image: ubuntu
    command: [echo]
{% endfor %}
  - name: last
    image: ubuntu
    comand: [echo]
"""
    err = refuse(spec, renderer)
    line, message = issue(err, "workflow.tasks[3].comand")
    assert line == 11 and "did you mean 'command'" in message
