"""Roles' policies and the decisions that follow from them, in OSMO's shape.

A policy is ``{effect: Allow|Deny, actions: [...], resources: [...], scope: own|any}``. A
principal may do an action on a resource when some policy of its roles allows it and none
denies it (Deny wins). Actions are OSMO's names (``workflow:Create``, ``pool:List``, ...), with
``*`` and ``<family>:*`` as wildcards; resources are ``pool/<name>``, ``pool/*`` or ``*``.
Actions that are not about one pool (``user:Admin``, ``role:Admin``, ``audit:Read``) are
decided on the resource ``*``, which only a policy on ``*`` covers: ``pool/*`` is every pool,
not everything.

``scope`` narrows an Allow for the actions on one existing workflow (cancel, exec,
port-forward): ``own`` (the default) covers only the caller's own workflows, ``any`` every
workflow of the pools it names. It never narrows reading or listing, and a Deny denies
whatever the scope (as in Argo's and Kubernetes' RBAC, a refusal is never partial).

Pure functions and frozen values only: the role cache (``app/access/service.py``) builds one
``Access`` per set of roles and every replica decides the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

__all__ = (
    "ACTIONS",
    "ADMIN_POLICIES",
    "EVERYTHING",
    "OWN_SCOPED",
    "USER_POLICIES",
    "Access",
    "Policies",
    "Policy",
    "pool_resource",
)

ACTIONS = (
    "workflow:Create",
    "workflow:Read",
    "workflow:List",
    "workflow:Cancel",
    "workflow:Exec",
    "workflow:PortForward",
    "pool:List",
    "pool:Admin",
    "backend:Admin",
    "user:Admin",
    "role:Admin",
    "credentials:*",
    "audit:Read",
)
# The actions on one existing workflow, which a policy's scope narrows.
OWN_SCOPED = frozenset({"workflow:Cancel", "workflow:Exec", "workflow:PortForward"})
EVERYTHING = "*"

_FAMILIES = frozenset(a.split(":")[0] for a in ACTIONS)
_RESOURCE = re.compile(r"^(\*|pool/\*|pool/[A-Za-z0-9][A-Za-z0-9_-]{0,63})$")

Pattern = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    effect: Literal["Allow", "Deny"]
    actions: Annotated[list[Pattern], msgspec.Meta(min_length=1, max_length=64)]
    resources: Annotated[list[Pattern], msgspec.Meta(min_length=1, max_length=256)] = msgspec.field(
        default_factory=lambda: [EVERYTHING]
    )
    scope: Literal["own", "any"] = "own"

    def problems(self, where: str) -> list[str]:
        """What is wrong with this policy, each naming ``where`` it is (empty when valid)."""
        out = []
        for i, action in enumerate(self.actions):
            if not _known_action(action):
                out.append(
                    f"{where}.actions[{i}]: unknown action {action!r}; use one of "
                    f"{', '.join(ACTIONS)}, '<family>:*' or '*'"
                )
        for i, resource in enumerate(self.resources):
            if not _RESOURCE.match(resource):
                out.append(
                    f"{where}.resources[{i}]: {resource!r} is not a resource; use "
                    "'pool/<name>', 'pool/*' or '*'"
                )
        return out


# A role's policies, bounded alike wherever they come in (the API, the roles page, the CLI).
Policies = Annotated[list[Policy], msgspec.Meta(max_length=100)]

ADMIN_POLICIES = (Policy("Allow", [EVERYTHING], [EVERYTHING], "any"),)
USER_POLICIES = (
    Policy("Allow", ["workflow:*"], ["pool/default"]),
    Policy("Allow", ["pool:List"], ["pool/default"]),
)


def pool_resource(pool: str) -> str:
    return f"pool/{pool}"


def _known_action(pattern: str) -> bool:
    if pattern == EVERYTHING or pattern in ACTIONS:
        return True
    family, _, rest = pattern.partition(":")
    return rest == "*" and family in _FAMILIES


def _action_matches(pattern: str, action: str) -> bool:
    if pattern in (EVERYTHING, action):
        return True
    return pattern.endswith(":*") and action.startswith(pattern[:-1])


def _resource_matches(pattern: str, resource: str) -> bool:
    if pattern in (EVERYTHING, resource):
        return True
    return pattern == "pool/*" and resource.startswith("pool/")


@dataclass(frozen=True, slots=True)
class Access:
    """What one set of policies allows. ``policies`` is in no particular order: Deny wins."""

    policies: tuple[Policy, ...] = ()

    def allows(self, action: str, resource: str = EVERYTHING, *, own: bool = True) -> bool:
        """May the holder do ``action`` on ``resource``? ``own``: for the actions on one
        existing workflow, whether it is the caller's own (else an Allow needs scope any)."""
        allowed = False
        for policy in self.policies:
            if not any(_action_matches(a, action) for a in policy.actions):
                continue
            if not any(_resource_matches(r, resource) for r in policy.resources):
                continue
            if policy.effect == "Deny":
                return False
            if own or action not in OWN_SCOPED or policy.scope == "any":
                allowed = True
        return allowed

    def pools(self, action: str, names: list[str]) -> list[str]:
        """Those of the pools ``names`` on which ``action`` is allowed (for own workflows)."""
        return [n for n in names if self.allows(action, pool_resource(n))]
