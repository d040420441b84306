"""The service layer shared by the CLI and the REST API.

Every function takes a :class:`~sipbridge.store.db.Database`, opens its own session and
returns plain records from :mod:`sipbridge.store.records`. Bad input raises
:class:`InvalidField` (a ValueError whose message starts with the field's name), unknown
names :class:`NotFound`, taken names :class:`AlreadyExists`.

One module a job: :mod:`._common` (errors, :data:`UNSET`, shared validators and by-name
queries), :mod:`.agents`, :mod:`.numbers`, :mod:`.trunks`, :mod:`.apikeys`, :mod:`.bans`,
:mod:`.calls`, :mod:`.instances`, :mod:`.registrations`, :mod:`.traces` and :mod:`.stats`;
everything public is re-exported here.
"""

from sipbridge.store.service._common import UNSET, AlreadyExists, InvalidField, NotFound, Unset
from sipbridge.store.service.agents import (
    AGENT_PROTOCOLS,
    SAMPLE_RATES,
    add_agent,
    get_agent,
    list_agents,
    remove_agent,
    update_agent,
)
from sipbridge.store.service.agents import MAX_AGENT_URLS as MAX_AGENT_URLS
from sipbridge.store.service.agents import MAX_CA_BUNDLE_PATH as MAX_CA_BUNDLE_PATH
from sipbridge.store.service.apikeys import (
    api_key_by_hash,
    api_key_hash,
    create_api_key,
    list_api_keys,
    revoke_api_key,
    verify_api_key,
)
from sipbridge.store.service.bans import (
    BAN_REASONS,
    add_ban,
    list_bans,
    purge_expired_bans,
    remove_ban,
    validate_ban_address,
)
from sipbridge.store.service.calls import MAX_PAGE as MAX_PAGE
from sipbridge.store.service.calls import (
    CallFilter,
    call_row_values,
    clear_recordings,
    close_interrupted,
    close_open_calls,
    get_call,
    iter_calls,
    list_calls,
    list_calls_page,
    probe_call_write,
    save_call,
    save_call_events,
    write_call,
)
from sipbridge.store.service.instances import (
    LOST_REASON,
    Heartbeat,
    LostInstance,
    close_lost_instances,
    database_now,
    get_instance,
    instance_heartbeat,
    list_instances,
    register_instance,
    stop_instance,
)
from sipbridge.store.service.numbers import (
    NumberRoute,
    add_number,
    get_number,
    list_numbers,
    lookup_number,
    remove_number,
    update_number,
)
from sipbridge.store.service.registrations import (
    REGISTRATION_STATES,
    list_registrations,
    save_registration,
)
from sipbridge.store.service.stats import CallStats, call_stats
from sipbridge.store.service.traces import (
    DEFAULT_TRACE_SECONDS,
    MAX_TRACE_SECONDS,
    TRACE_KINDS,
    add_trace,
    list_traces,
    purge_expired_traces,
    remove_trace,
    trace_target,
)
from sipbridge.store.service.trunks import (
    TRUNK_CODECS,
    add_trunk,
    get_trunk,
    list_trunks,
    remove_trunk,
    update_trunk,
)

__all__ = [
    "AGENT_PROTOCOLS",
    "BAN_REASONS",
    "DEFAULT_TRACE_SECONDS",
    "LOST_REASON",
    "MAX_TRACE_SECONDS",
    "REGISTRATION_STATES",
    "SAMPLE_RATES",
    "TRACE_KINDS",
    "TRUNK_CODECS",
    "UNSET",
    "AlreadyExists",
    "CallFilter",
    "CallStats",
    "Heartbeat",
    "InvalidField",
    "LostInstance",
    "NotFound",
    "NumberRoute",
    "Unset",
    "add_agent",
    "add_ban",
    "add_number",
    "add_trace",
    "add_trunk",
    "api_key_by_hash",
    "api_key_hash",
    "call_row_values",
    "call_stats",
    "clear_recordings",
    "close_interrupted",
    "close_lost_instances",
    "close_open_calls",
    "create_api_key",
    "database_now",
    "get_agent",
    "get_call",
    "get_instance",
    "get_number",
    "get_trunk",
    "instance_heartbeat",
    "iter_calls",
    "list_agents",
    "list_api_keys",
    "list_bans",
    "list_calls",
    "list_calls_page",
    "list_instances",
    "list_numbers",
    "list_registrations",
    "list_traces",
    "list_trunks",
    "lookup_number",
    "probe_call_write",
    "purge_expired_bans",
    "purge_expired_traces",
    "register_instance",
    "remove_agent",
    "remove_ban",
    "remove_number",
    "remove_trace",
    "remove_trunk",
    "revoke_api_key",
    "save_call",
    "save_call_events",
    "save_registration",
    "stop_instance",
    "trace_target",
    "update_agent",
    "update_number",
    "update_trunk",
    "validate_ban_address",
    "verify_api_key",
    "write_call",
]
