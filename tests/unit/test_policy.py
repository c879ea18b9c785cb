"""Policy decisions (app/access/policy.py): wildcards, Deny wins, scope, resources."""

from __future__ import annotations

import msgspec
import pytest

from app.access.policy import ADMIN_POLICIES, USER_POLICIES, Access, Policy


def access(*policies: Policy) -> Access:
    return Access(tuple(policies))


def test_the_built_in_user_role_works_its_own_workflows_on_the_default_pool_only() -> None:
    user = Access(USER_POLICIES)
    for action in ("workflow:Create", "workflow:Read", "workflow:List", "workflow:Cancel"):
        assert user.allows(action, "pool/default")
        assert not user.allows(action, "pool/gpu")
    assert user.allows("pool:List", "pool/default")
    assert not user.allows("workflow:Cancel", "pool/default", own=False)  # another's
    assert not user.allows("pool:Admin", "pool/default")
    assert not user.allows("user:Admin")
    assert user.pools("workflow:Create", ["a", "default", "gpu"]) == ["default"]


def test_admin_may_do_everything_everywhere() -> None:
    admin = Access(ADMIN_POLICIES)
    assert admin.allows("user:Admin")
    assert admin.allows("workflow:Cancel", "pool/x", own=False)
    assert admin.allows("audit:Read")


def test_family_wildcards_match_only_their_family() -> None:
    a = access(Policy("Allow", ["workflow:*"], ["*"]))
    assert a.allows("workflow:Exec", "pool/a")
    assert not a.allows("pool:List", "pool/a")
    assert not a.allows("workflowx:Read", "pool/a")


def test_pool_star_is_every_pool_but_not_the_global_resource() -> None:
    a = access(Policy("Allow", ["*"], ["pool/*"]))
    assert a.allows("pool:Admin", "pool/anything")
    assert not a.allows("user:Admin")  # decided on "*", which pool/* does not cover
    assert not a.allows("role:Admin", "*")


def test_deny_wins_over_allow_whatever_the_order_and_the_scope() -> None:
    allow = Policy("Allow", ["workflow:*"], ["pool/*"], "any")
    deny = Policy("Deny", ["workflow:Cancel"], ["pool/prod"])
    for a in (access(allow, deny), access(deny, allow)):
        assert a.allows("workflow:Cancel", "pool/dev")
        assert not a.allows("workflow:Cancel", "pool/prod")
        assert not a.allows("workflow:Cancel", "pool/prod", own=False)
        assert a.allows("workflow:Read", "pool/prod")


def test_scope_any_is_needed_for_another_users_workflow_and_never_narrows_reading() -> None:
    own = access(Policy("Allow", ["workflow:*"], ["pool/a"]))
    anyone = access(Policy("Allow", ["workflow:Cancel"], ["pool/a"], "any"))
    assert own.allows("workflow:Cancel", "pool/a", own=True)
    assert not own.allows("workflow:Cancel", "pool/a", own=False)
    assert not own.allows("workflow:Exec", "pool/a", own=False)
    assert own.allows("workflow:Read", "pool/a", own=False)  # reading is not scoped
    assert anyone.allows("workflow:Cancel", "pool/a", own=False)


def test_no_policy_allows_nothing() -> None:
    assert not Access().allows("workflow:Read", "pool/default")
    assert Access().pools("workflow:Read", ["default"]) == []


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        ({"effect": "Allow", "actions": ["workflow:Fly"]}, "actions[0]: unknown action"),
        ({"effect": "Allow", "actions": ["nope:*"]}, "actions[0]: unknown action"),
        ({"effect": "Allow", "actions": ["*"], "resources": ["pools/a"]}, "resources[0]"),
        ({"effect": "Allow", "actions": ["*"], "resources": ["pool/a b"]}, "resources[0]"),
    ],
)
def test_bad_policies_are_named(policy: dict[str, object], problem: str) -> None:
    decoded = msgspec.convert(policy, Policy)
    problems = decoded.problems("policies[3]")
    assert problems and problems[0].startswith(f"policies[3].{problem}"), problems


@pytest.mark.parametrize(
    "policy",
    [
        {"effect": "allow", "actions": ["*"]},
        {"effect": "Allow", "actions": []},
        {"effect": "Allow", "actions": ["*"], "scope": "mine"},
        {"effect": "Allow", "actions": ["*"], "extra": 1},
    ],
)
def test_malformed_policies_do_not_decode(policy: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(policy, Policy)
