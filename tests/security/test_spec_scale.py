"""Large specs within the limits are checked within the spec worker's CPU limit (issue 7, item 1).

The line map between a template and its rendering was quadratic in how often a line repeats:
a spec writing out 2,000 tasks before a loop took about 6 s of CPU there, so a legitimate
10,000-task workflow was refused for the 2 s limit. These run the whole pipeline in a capped
spec worker, as the server does.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import msgspec
import pytest

from app.spec.errors import SpecError
from app.spec.parse import parse_spec
from app.spec.template import TemplateRenderer
from app.workflows.schemas import DryRunPlan

HEAD = "workflow:\n  name: wide\n  tasks:\n"


def _written(count: int) -> str:
    return "".join(
        f"  - name: w{j}\n    image: x\n    command: [echo]\n    args: [a, b]\n"
        for j in range(count)
    )


@pytest.fixture(scope="module")
def renderer() -> Iterator[TemplateRenderer]:
    r = TemplateRenderer(timeout=2.0, max_tasks=10_000)
    yield r
    r.close()


def test_written_out_tasks_before_a_loop_fit_the_cpu_limit(renderer: TemplateRenderer) -> None:
    spec = (
        HEAD
        + _written(2000)
        + "{% for i in range(8000) %}\n  - name: t{{i}}\n    image: x\n    command: [echo]\n"
        + "    args: [a, b]\n{% endfor %}\n"
    )
    parsed = renderer.parse(spec, None)
    assert parsed.plan.task_count == 10_000
    assert parsed.plan.groups[-1].tasks[0].name == "t7999"


def test_a_refusal_inside_a_loop_names_the_line_of_the_loop_body(
    renderer: TemplateRenderer,
) -> None:
    spec = (
        HEAD
        + _written(300)
        + "{% for i in range(300) %}\n"
        + "  - name: t{{i}}\n"
        + "    comand: [echo]\n"  # the typo: not the body's last line
        + "    image: x\n"
        + "{% endfor %}\n"
    )
    typo_line = 3 + 4 * 300 + 3
    with pytest.raises(SpecError) as info:
        parse_spec(spec, None, renderer)
    lines = {i.path: i.line for i in info.value.issues}
    # Every iteration's refusal points at the template line that has the typo.
    for index in (300, 301, 450, 599):
        assert lines[f"workflow.tasks[{index}].comand"] == typo_line, index


FAN_OUT = """\
workflow:
  name: fan
  tasks:
  - {name: root, image: x, command: [echo]}
  - {name: a, image: x, command: [echo], inputs: [{task: root}], resources: {cpu: 1}}
  - {name: b, image: x, command: [echo], inputs: [{task: root}]}
"""


async def test_the_dry_run_answer_keeps_its_shape(api: httpx.AsyncClient) -> None:
    """The answer is now encoded in threads from pieces: still the plan of DESIGN §9."""
    r = await api.post("/api/v1/workflows", json={"spec": FAN_OUT, "dry_run": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    msgspec.json.decode(r.content, type=DryRunPlan, strict=True)
    plan = r.json()
    assert set(plan) == {
        "name", "pool", "priority", "exec_timeout", "queue_timeout", "groups", "rendered_spec",
    }  # fmt: skip
    assert "id" not in plan and plan["name"] == "fan" and plan["pool"] == "default"
    groups = {g["name"]: g for g in plan["groups"]}
    assert [g["name"] for g in plan["groups"]] == ["root", "a", "b"]
    assert groups["a"]["upstream"] == ["root"] and groups["root"]["upstream"] == []
    task_a, task_b = groups["a"]["tasks"][0], groups["b"]["tasks"][0]
    assert task_a["resources"]["cpu"] == 1
    # No resources given: the pool's defaults are filled in, as before.
    assert set(task_b["resources"]) == {"cpu", "gpu", "memory", "storage", "platform"}
    assert task_b["inputs"] == [{"index": 0, "task": "root"}]
    assert plan["rendered_spec"] == FAN_OUT
