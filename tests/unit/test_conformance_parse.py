"""Every spec of the OSMO conformance corpus parses, or is refused naming the field and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from app.spec.errors import SpecError
from app.spec.parse import parse_spec
from app.spec.template import TemplateRenderer
from tests.support import conformance_dir

_DIR = conformance_dir()
_FILES = sorted((_DIR / "osmo").rglob("*.yaml")) if _DIR else []
pytestmark = pytest.mark.conformance


@pytest.fixture(scope="module")
def renderer() -> Iterator[TemplateRenderer]:
    r = TemplateRenderer()
    yield r
    r.close()


def test_the_corpus_is_there(conformance: Path) -> None:
    assert len(list((conformance / "osmo").rglob("*.yaml"))) >= 80


@pytest.mark.parametrize(
    "path", _FILES, ids=[str(p.relative_to(_DIR / "osmo")) for p in _FILES] if _DIR else []
)
def test_every_spec_parses_or_is_refused_with_field_and_line(
    path: Path, renderer: TemplateRenderer, conformance: Path
) -> None:
    text = path.read_text()
    try:
        parsed = parse_spec(text, None, renderer)
    except SpecError as err:
        assert err.issues, "a refusal must say what is wrong"
        for issue in err.issues:
            assert issue.message
            assert issue.path, f"no field path in {issue}"
            # Only a template that could not render at all may lack a line (time or memory).
            if issue.line is None:
                assert "template" in issue.message or "rendering" in issue.message, issue
            else:
                assert 1 <= issue.line <= text.count("\n") + 1
        if "localpath:" in text:
            assert any("localpath" in i.path for i in err.issues) or any(
                "template" in i.message or "not supported" in i.message or "undefined" in i.message
                for i in err.issues
            )
        return
    assert parsed.plan.groups, "a spec that parses has at least one group"
    assert "localpath:" not in text, "a spec naming a local file cannot pass through the API"


def test_expected_refusals_name_the_word_expect_yaml_gives(
    conformance: Path, renderer: TemplateRenderer
) -> None:
    rows = yaml.safe_load((conformance / "expect.yaml").read_text())
    rejects = [r for r in rows if "reject" in r]
    assert rejects
    for row in rejects:
        text = (conformance / "osmo" / row["file"]).read_text()
        try:
            parse_spec(text, row.get("set"), renderer)
        except SpecError as err:
            if any(row["reject"] in i.message or row["reject"] in i.path for i in err.issues):
                continue
            raise AssertionError(f"{row['file']}: {err.issues}") from None
        # Refused later, at submission (capacity): covered by the end-to-end conformance test.
        assert row["reject"] == "gpu", row
