"""The management pages: agents, numbers, trunks, bans and API keys — list, create, edit,
delete, through the service layer the API and CLI use. A value the service refuses comes
back as the same page with the message next to its field (422)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from sipbridge.config import SRTP_MODES
from sipbridge.dashboard.web import Form, dashboard_of, read_form, redirect, render, signed_in
from sipbridge.store import service
from sipbridge.store.records import ApiKeyRecord
from sipbridge.store.service import AlreadyExists, InvalidField, NotFound

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(signed_in)])

Errors = dict[str, str]


def _lines(text: str) -> list[str]:
    """A textarea's values: one per line (commas also separate)."""
    return [item.strip() for line in text.splitlines() for item in line.split(",") if item.strip()]


def _int(form: Form, name: str, errors: Errors) -> int | None:
    text = form.get(name).strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        errors[name] = f"{text!r} is not a whole number"
        return None


async def _attempt(
    errors: Errors, call: Callable[[], Awaitable[Any]], name_field: str = "name"
) -> Any:
    """Run a service call, its refusals put in ``errors`` by field."""
    if errors:
        return None
    try:
        return await call()
    except InvalidField as exc:
        errors[exc.field] = exc.detail
    except AlreadyExists as exc:
        errors[name_field] = str(exc)
    except NotFound as exc:
        errors["agent"] = str(exc)
    return None


async def _changed(request: Request) -> None:
    notify = dashboard_of(request).bans_changed
    if notify is not None:
        result = notify()
        if inspect.isawaitable(result):
            await result


# ------------------------------------------------------------------ agents


def _agent_values(form: Form) -> dict[str, Any]:
    return {
        "name": form.get("name").strip(),
        "urls": form.get("urls"),
        "token": form.get("token"),
        "protocol": form.get("protocol", "native"),
        "sample_rate": form.get("sample_rate", "8000"),
        "voice_enabled": form.has("voice_enabled"),
        "ca_bundle": form.get("ca_bundle").strip(),
        "transfer_allow": form.get("transfer_allow"),
        "clear_token": form.has("clear_token"),
    }


async def _agents_page(
    request: Request,
    values: dict[str, Any] | None = None,
    errors: Errors | None = None,
    status_code: int = 200,
) -> Response:
    db = dashboard_of(request).db
    agents = await service.list_agents(db)
    numbers = await service.list_numbers(db)
    counts: dict[str, int] = {}
    for number in numbers:
        if number.agent:
            counts[number.agent] = counts.get(number.agent, 0) + 1
    context = {
        "agents": agents,
        "counts": counts,
        "values": values or {"protocol": "native", "sample_rate": "8000", "voice_enabled": True},
        "errors": errors or {},
        "protocols": service.AGENT_PROTOCOLS,
        "sample_rates": service.SAMPLE_RATES,
    }
    return render(request, "agents.html", context, status_code=status_code)


@router.get("/agents")
async def agents(request: Request) -> Response:
    return await _agents_page(request)


def _rate(values: dict[str, Any], errors: Errors) -> int:
    try:
        return int(values["sample_rate"])
    except ValueError:
        errors["sample_rate"] = f"{values['sample_rate']!r} is not a sample rate"
        return 0


@router.post("/agents")
async def agent_create(request: Request) -> Response:
    form = await read_form(request)
    values = _agent_values(form)
    errors: Errors = {}
    rate = _rate(values, errors)
    done = await _attempt(
        errors,
        lambda: service.add_agent(
            dashboard_of(request).db,
            values["name"],
            _lines(values["urls"]),
            values["voice_enabled"],
            protocol=values["protocol"],
            token=values["token"] or None,
            sample_rate=rate,
            ca_bundle=values["ca_bundle"] or None,
            transfer_allow=_lines(values["transfer_allow"]),
        ),
    )
    if done is None:
        return await _agents_page(request, values, errors, 422)
    return redirect(request, "/agents")


async def _agent_edit_page(
    request: Request, name: str, values: dict[str, Any] | None, errors: Errors, status_code: int
) -> Response:
    try:
        agent = await service.get_agent(dashboard_of(request).db, name)
    except NotFound:
        return render(request, "not_found.html", {"what": f"agent {name}"}, status_code=404)
    if values is None:
        values = {
            "name": agent.name,
            "urls": "\n".join(agent.urls),
            "protocol": agent.protocol,
            "sample_rate": str(agent.sample_rate),
            "voice_enabled": agent.voice_enabled,
            "ca_bundle": agent.ca_bundle or "",
            "transfer_allow": "\n".join(agent.transfer_allow),
        }
    context = {
        "agent": agent,
        "values": values,
        "errors": errors,
        "protocols": service.AGENT_PROTOCOLS,
        "sample_rates": service.SAMPLE_RATES,
    }
    return render(request, "agent_edit.html", context, status_code=status_code)


@router.get("/agents/{name}")
async def agent_edit(request: Request, name: str) -> Response:
    return await _agent_edit_page(request, name, None, {}, 200)


@router.post("/agents/{name}")
async def agent_update(request: Request, name: str) -> Response:
    form = await read_form(request)
    values = _agent_values(form)
    errors: Errors = {}
    rate = _rate(values, errors)
    changes: dict[str, Any] = {
        "urls": _lines(values["urls"]),
        "voice_enabled": values["voice_enabled"],
        "protocol": values["protocol"],
        "sample_rate": rate,
        "ca_bundle": values["ca_bundle"] or None,
        "transfer_allow": _lines(values["transfer_allow"]),
    }
    if values["clear_token"]:
        changes["token"] = None
    elif values["token"]:
        changes["token"] = values["token"]
    done = await _attempt(
        errors, lambda: service.update_agent(dashboard_of(request).db, name, **changes)
    )
    if done is None:
        return await _agent_edit_page(request, name, values, errors, 422)
    return redirect(request, "/agents")


@router.post("/agents/{name}/delete")
async def agent_delete(request: Request, name: str) -> Response:
    await read_form(request)
    with contextlib.suppress(NotFound):  # already gone: the list shows it
        await service.remove_agent(dashboard_of(request).db, name)
    return redirect(request, "/agents")


# ------------------------------------------------------------------ numbers


async def _numbers_page(
    request: Request,
    values: dict[str, Any] | None = None,
    errors: Errors | None = None,
    status_code: int = 200,
) -> Response:
    db = dashboard_of(request).db
    context = {
        "numbers": await service.list_numbers(db),
        "agents": [agent.name for agent in await service.list_agents(db)],
        "values": values or {},
        "errors": errors or {},
        "edit": request.query_params.get("edit"),
    }
    return render(request, "numbers.html", context, status_code=status_code)


@router.get("/numbers")
async def numbers(request: Request) -> Response:
    return await _numbers_page(request)


@router.post("/numbers")
async def number_create(request: Request) -> Response:
    form = await read_form(request)
    dashboard = dashboard_of(request)
    values = {"number": form.get("number").strip(), "agent": form.get("agent")}
    errors: Errors = {}
    if not values["agent"]:
        errors["agent"] = "choose the agent that answers this number"
    done = await _attempt(
        errors,
        lambda: service.add_number(
            dashboard.db, values["number"], values["agent"], dashboard.default_region
        ),
        name_field="number",
    )
    if done is None:
        return await _numbers_page(request, values, errors, 422)
    return redirect(request, "/numbers")


@router.post("/numbers/{number}")
async def number_update(request: Request, number: str) -> Response:
    form = await read_form(request)
    dashboard = dashboard_of(request)
    agent = form.get("agent") or None
    errors: Errors = {}
    done = await _attempt(
        errors,
        lambda: service.update_number(dashboard.db, number, agent, dashboard.default_region),
    )
    if done is None:
        errors = {f"agent-{number}": text for text in errors.values()}
        return await _numbers_page(request, None, errors, 422)
    return redirect(request, "/numbers")


@router.post("/numbers/{number}/delete")
async def number_delete(request: Request, number: str) -> Response:
    await read_form(request)
    dashboard = dashboard_of(request)
    with contextlib.suppress(NotFound, InvalidField):  # already gone: the list shows it
        await service.remove_number(dashboard.db, number, dashboard.default_region)
    return redirect(request, "/numbers")


# ------------------------------------------------------------------ trunks


def _trunk_values(form: Form) -> dict[str, Any]:
    return {
        "name": form.get("name").strip(),
        "allowed_cidrs": form.get("allowed_cidrs"),
        "host": form.get("host").strip(),
        "username": form.get("username").strip(),
        "password": form.get("password"),
        "register": form.has("register"),
        "max_calls": form.get("max_calls").strip(),
        "codecs": form.getlist("codecs"),
        "allowed_numbers": form.get("allowed_numbers"),
        "srtp": form.get("srtp", "optional"),
        "max_message_rate": form.get("max_message_rate").strip(),
        "clear_password": form.has("clear_password"),
    }


def _trunk_settings(form: Form, values: dict[str, Any], errors: Errors) -> dict[str, Any]:
    return {
        "allowed_cidrs": _lines(values["allowed_cidrs"]),
        "host": values["host"] or None,
        "username": values["username"] or None,
        "register": values["register"],
        "max_calls": _int(form, "max_calls", errors),
        "codecs": values["codecs"],
        "allowed_numbers": _lines(values["allowed_numbers"]),
        "srtp": values["srtp"],
        "max_message_rate": _int(form, "max_message_rate", errors),
    }


async def _trunks_page(
    request: Request,
    values: dict[str, Any] | None = None,
    errors: Errors | None = None,
    status_code: int = 200,
    template: str = "trunks.html",
    trunk: Any = None,
) -> Response:
    db = dashboard_of(request).db
    context = {
        "trunks": await service.list_trunks(db),
        "values": values or {"srtp": "optional", "codecs": []},
        "errors": errors or {},
        "codec_names": service.TRUNK_CODECS,
        "srtp_modes": SRTP_MODES,
        "trunk": trunk,
    }
    return render(request, template, context, status_code=status_code)


@router.get("/trunks")
async def trunks(request: Request) -> Response:
    return await _trunks_page(request)


@router.post("/trunks")
async def trunk_create(request: Request) -> Response:
    form = await read_form(request)
    dashboard = dashboard_of(request)
    values = _trunk_values(form)
    errors: Errors = {}
    settings = _trunk_settings(form, values, errors)
    done = await _attempt(
        errors,
        lambda: service.add_trunk(
            dashboard.db,
            values["name"],
            password=values["password"] or None,
            default_region=dashboard.default_region,
            **settings,
        ),
    )
    if done is None:
        return await _trunks_page(request, values, errors, 422)
    return redirect(request, "/trunks")


@router.get("/trunks/{name}")
async def trunk_edit(request: Request, name: str) -> Response:
    try:
        trunk = await service.get_trunk(dashboard_of(request).db, name)
    except NotFound:
        return render(request, "not_found.html", {"what": f"trunk {name}"}, status_code=404)
    values = {
        "name": trunk.name,
        "allowed_cidrs": "\n".join(trunk.allowed_cidrs),
        "host": trunk.host or "",
        "username": trunk.username or "",
        "register": trunk.register,
        "max_calls": "" if trunk.max_calls is None else str(trunk.max_calls),
        "codecs": trunk.codecs,
        "allowed_numbers": "\n".join(trunk.allowed_numbers),
        "srtp": trunk.srtp,
        "max_message_rate": "" if trunk.max_message_rate is None else str(trunk.max_message_rate),
    }
    return await _trunks_page(request, values, {}, 200, "trunk_edit.html", trunk)


@router.post("/trunks/{name}")
async def trunk_update(request: Request, name: str) -> Response:
    form = await read_form(request)
    dashboard = dashboard_of(request)
    values = _trunk_values(form)
    errors: Errors = {}
    settings = _trunk_settings(form, values, errors)
    if values["clear_password"]:
        settings["password"] = None
    elif values["password"]:
        settings["password"] = values["password"]
    done = await _attempt(
        errors,
        lambda: service.update_trunk(
            dashboard.db, name, default_region=dashboard.default_region, **settings
        ),
    )
    if done is None:
        try:
            trunk = await service.get_trunk(dashboard.db, name)
        except NotFound:
            return render(request, "not_found.html", {"what": f"trunk {name}"}, status_code=404)
        values["name"] = name
        return await _trunks_page(request, values, errors, 422, "trunk_edit.html", trunk)
    return redirect(request, "/trunks")


@router.post("/trunks/{name}/delete")
async def trunk_delete(request: Request, name: str) -> Response:
    await read_form(request)
    with contextlib.suppress(NotFound):  # already gone: the list shows it
        await service.remove_trunk(dashboard_of(request).db, name)
    return redirect(request, "/trunks")


# ------------------------------------------------------------------ bans


async def _bans_page(
    request: Request,
    values: dict[str, Any] | None = None,
    errors: Errors | None = None,
    status_code: int = 200,
) -> Response:
    context = {
        "bans": await service.list_bans(dashboard_of(request).db),
        "values": values or {},
        "errors": errors or {},
    }
    return render(request, "bans.html", context, status_code=status_code)


@router.get("/bans")
async def bans(request: Request) -> Response:
    return await _bans_page(request)


@router.post("/bans")
async def ban_create(request: Request) -> Response:
    form = await read_form(request)
    values = {
        "address": form.get("address").strip(),
        "duration": form.get("duration").strip(),
        "note": form.get("note").strip(),
    }
    errors: Errors = {}
    duration = _int(form, "duration", errors)
    done = await _attempt(
        errors,
        lambda: service.add_ban(
            dashboard_of(request).db,
            values["address"],
            duration=duration,
            note=values["note"] or None,
        ),
        name_field="address",
    )
    if done is None:
        return await _bans_page(request, values, errors, 422)
    await _changed(request)
    return redirect(request, "/bans")


@router.post("/bans/remove")
async def ban_remove(request: Request) -> Response:
    form = await read_form(request)
    with contextlib.suppress(NotFound, InvalidField):  # already gone: the list shows it
        await service.remove_ban(dashboard_of(request).db, form.get("address"))
    await _changed(request)
    return redirect(request, "/bans")


# ------------------------------------------------------------------ API keys


async def _keys_page(
    request: Request,
    values: dict[str, Any] | None = None,
    errors: Errors | None = None,
    status_code: int = 200,
    created: tuple[ApiKeyRecord, str] | None = None,
) -> Response:
    context = {
        "keys": await service.list_api_keys(dashboard_of(request).db),
        "values": values or {},
        "errors": errors or {},
        "created": created,
    }
    return render(request, "keys.html", context, status_code=status_code)


@router.get("/keys")
async def keys(request: Request) -> Response:
    return await _keys_page(request)


@router.post("/keys")
async def key_create(request: Request) -> Response:
    form = await read_form(request)
    values = {"name": form.get("name").strip()}
    errors: Errors = {}
    created = await _attempt(
        errors, lambda: service.create_api_key(dashboard_of(request).db, values["name"])
    )
    if created is None:
        return await _keys_page(request, values, errors, 422)
    # The secret is shown once, on this answer (never stored).
    return await _keys_page(request, created=created)


@router.post("/keys/{name}/revoke")
async def key_revoke(request: Request, name: str) -> Response:
    await read_form(request)
    with contextlib.suppress(NotFound):  # already gone: the list shows it
        await service.revoke_api_key(dashboard_of(request).db, name)
    return redirect(request, "/keys")
