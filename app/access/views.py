"""Pages for the caller's account and, for those allowed, users and roles."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from app.access.policy import Policies
from app.access.service import RoleService, UserService
from app.audit.middleware import Note
from app.auth.middleware import allowed
from app.auth.service import Principal
from app.auth.sessions import start_session
from app.bounds import ROLE_NAME, USER_NAME, refuse_nul, role_path, user_path
from app.errors import Invalid
from app.pools.service import PoolService
from app.web import flash, page

__all__ = ("AccessViews",)

Form = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)]
_policies = msgspec.json.Decoder(Policies)


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name) or ""
    return (value[-1] if isinstance(value, list) else str(value)).strip()


MAX_ROLES = 64  # as the API's RoleList


def _role_list(data: dict[str, Any]) -> list[str]:
    """The roles a form chose, each a role name, at most MAX_ROLES of them."""
    value = data.get("roles") or []
    roles = sorted({str(v) for v in (value if isinstance(value, list) else [value]) if v})
    if len(roles) > MAX_ROLES:
        raise Invalid(f"at most {MAX_ROLES} roles may be chosen, not {len(roles)}")
    bad = [r for r in roles if not re.match(ROLE_NAME, r)]
    if bad:
        raise Invalid(f"{bad[0][:40]!r} is not a role name")
    return roles


async def _account(
    request: Request[Any, Any, Any],
    users: UserService,
    pools: PoolService,
    principal: Principal,
    error: str | None,
) -> Template:
    """The account page, with ``error`` (a refused password change) when there is one."""
    user = await users.get(principal.name)
    usable = await pools.accessible(principal, "workflow:Create")
    status = 422 if error else 200
    return page(request, "access/account.html", status_code=status, account=user,
                roles=sorted(principal.roles), pools=usable, via=principal.via,
                error=error)  # fmt: skip


class AccessViews(Controller):
    include_in_schema = False

    # -- the caller -----------------------------------------------------------------------

    @get("/account")
    async def account(
        self,
        request: Request[Any, Any, Any],
        users: NamedDependency[UserService],
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
    ) -> Template:
        return await _account(request, users, pools, principal, None)

    @post("/account/password", status_code=303)
    async def change_password(
        self,
        request: Request[Any, Any, Any],
        users: NamedDependency[UserService],
        pools: NamedDependency[PoolService],
        principal: NamedDependency[Principal],
        data: Form,
    ) -> Template | Redirect:
        refuse_nul({"current": 1024, "new": 1024, "confirm": 1024}, **{
            k: data.get(k) for k in ("current", "new", "confirm")})  # fmt: skip
        current, new = str(data.get("current") or ""), str(data.get("new") or "")
        if new != str(data.get("confirm") or ""):
            return await _account(request, users, pools, principal, "The two new passwords differ.")
        if not 8 <= len(new) <= 1024:
            return await _account(
                request, users, pools, principal, "The new password needs at least 8 characters."
            )
        try:
            await users.change_password(principal.name, current, new)
        except Invalid as exc:
            return await _account(request, users, pools, principal, f"Not changed: {exc.detail}.")
        if principal.via == "password":
            start_session(request, principal.name)  # every other session has ended
        flash(request, "Your password was changed; your other sessions were signed out.", "good")
        return Redirect(path="/account", status_code=303)

    # -- users ------------------------------------------------------------------------------

    @get("/admin/users", guards=[allowed("user:Admin")])
    async def users_page(
        self,
        request: Request[Any, Any, Any],
        users: NamedDependency[UserService],
        role_service: NamedDependency[RoleService],
    ) -> Template:
        items, _ = await users.page(500, None)
        return page(
            request, "access/users.html", users=items, roles=await role_service.all(), error=None
        )

    @post("/admin/users", status_code=303, guards=[allowed("user:Admin")])
    async def create_user(
        self,
        request: Request[Any, Any, Any],
        users: NamedDependency[UserService],
        note: NamedDependency[Note],
        data: Form,
    ) -> Redirect:
        name = _text(data, "name")
        note.target = name
        refuse_nul({"name": 64, "display_name": 200, "password": 1024}, name=name,
                   display_name=_text(data, "display_name"), password=_text(data, "password"))  # fmt: skip
        if not re.match(USER_NAME, name):
            raise Invalid(f"{name!r} is not a user name: letters, digits, '.', '_', '@' or '-'")
        kind = _text(data, "kind") or "person"
        if kind not in ("person", "service"):
            raise Invalid(f"kind {kind[:40]!r} is not one of person, service")
        password = _text(data, "password") or None
        if password is not None and len(password) < 8:
            raise Invalid("a password needs at least 8 characters")
        await users.create(
            name,
            display_name=_text(data, "display_name") or None,
            kind=kind,
            roles=_role_list(data) or ["user"],
            password=password,
        )
        flash(request, f"Created {kind} {name}.", "good")
        return Redirect(path="/admin/users", status_code=303)

    @post("/admin/users/{name:str}", status_code=303, guards=[allowed("user:Admin")])
    async def update_user(
        self,
        request: Request[Any, Any, Any],
        users: NamedDependency[UserService],
        data: Form,
        name: str = user_path(),
    ) -> Redirect:
        action = _text(data, "action")
        if action not in ("disable", "enable", "roles"):
            # An unknown (or missing) action must not be read as "save no roles".
            raise Invalid(f"unknown action {action!r}: use roles, disable or enable")
        if action == "disable":
            await users.update(name, disabled=True)
            flash(
                request, f"Disabled {name}: its sessions ended and its tokens were deleted.", "good"
            )
        elif action == "enable":
            await users.update(name, disabled=False)
            flash(request, f"Enabled {name}.", "good")
        elif action == "roles":
            roles = _role_list(data)
            await users.update(name, roles=roles)
            flash(request, f"{name} now holds {', '.join(roles) or 'no role'}.", "good")
        return Redirect(path="/admin/users", status_code=303)

    # -- roles ------------------------------------------------------------------------------

    @get("/admin/roles", guards=[allowed("role:Admin")])
    async def roles_page(
        self, request: Request[Any, Any, Any], role_service: NamedDependency[RoleService]
    ) -> Template:
        items = await role_service.all()
        for role in items:
            role["policies_json"] = json.dumps(role["policies"], indent=2)
        return page(request, "access/roles.html", roles=items)

    @post("/admin/roles", status_code=303, guards=[allowed("role:Admin")])
    async def put_role(
        self,
        request: Request[Any, Any, Any],
        role_service: NamedDependency[RoleService],
        note: NamedDependency[Note],
        data: Form,
    ) -> Redirect:
        name = _text(data, "name")
        note.target = name
        refuse_nul({"name": 32, "description": 2000, "policies": 100_000}, name=name,
                   description=_text(data, "description"), policies=_text(data, "policies"))  # fmt: skip
        if not re.match(ROLE_NAME, name):
            raise Invalid(f"{name!r} is not a role name: letters, digits, '_' or '-' (32 at most)")
        try:
            policies = _policies.decode(_text(data, "policies") or "[]")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Invalid(f"the policies are not a valid JSON list of policies: {exc}") from None
        await role_service.put(name, _text(data, "description"), policies)
        flash(request, f"Saved role {name}.", "good")
        return Redirect(path="/admin/roles", status_code=303)

    @post("/admin/roles/{name:str}/delete", status_code=303, guards=[allowed("role:Admin")])
    async def delete_role(
        self,
        request: Request[Any, Any, Any],
        role_service: NamedDependency[RoleService],
        name: str = role_path(),
    ) -> Redirect:
        await role_service.delete(name)
        flash(request, f"Deleted role {name}; nobody holds it any more.", "good")
        return Redirect(path="/admin/roles", status_code=303)
