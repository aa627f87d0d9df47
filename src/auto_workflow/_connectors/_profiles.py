"""Connector profiles: ``[tool.auto_workflow.connectors.<name>]`` in pyproject.toml, overlaid
by ``AUTO_WORKFLOW_CONNECTORS__<NAME>__<FIELD>`` environment variables.

Invariants: nothing is read at import; a :class:`Profile` is validated when it is made (an
unknown kind or field, a missing or bad value is a :class:`ProfileError` naming the profile,
the field, where it came from and what is valid); a profile holds ``secret://KEY``
references, never the secrets themselves — :func:`resolve` looks them up through the active
secrets provider (when the connector is first used) and registers every resolved value and
every field that looks like a credential for redaction. A profile is a frozen record that
pickles as its fields, so a process worker can re-create the connector from it.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auto_workflow._connectors._errors import ProfileError
from auto_workflow._core._config import read_tool_table
from auto_workflow._history._values import register_secret
from auto_workflow.secrets import secret

__all__ = [
    "ENV_PREFIX",
    "SECRET_SCHEME",
    "FieldValue",
    "Kind",
    "Profile",
    "load_profiles",
    "make_profile",
    "resolve",
]

ENV_PREFIX = "AUTO_WORKFLOW_CONNECTORS__"
SECRET_SCHEME = "secret://"
FieldValue = str | int | float | bool | None
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_SENSITIVE = re.compile(r"password|secret|token|key|credential|connection_string|sas", re.I)
"""Field names whose values are credentials even when written in plain text."""


class Kind(enum.StrEnum):
    """What a profile connects to."""

    POSTGRES = "postgres"
    FSSPEC = "fsspec"


_EXTRAS = {Kind.POSTGRES: "postgres", Kind.FSSPEC: "storage"}


def _text(name: str, value: FieldValue) -> FieldValue:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def _int_at_least(minimum: int) -> Callable[[str, FieldValue], FieldValue]:
    def check(name: str, value: FieldValue) -> FieldValue:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum}")
        return value

    return check


def _seconds(name: str, value: FieldValue) -> FieldValue:
    try:
        number = float(value) if isinstance(value, (str, int, float)) else math.nan
    except ValueError:
        number = math.nan
    if isinstance(value, bool) or not (number > 0 and math.isfinite(number)):
        raise ValueError("must be a number of seconds > 0")
    return number


def _optional_seconds(name: str, value: FieldValue) -> FieldValue:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return _seconds(name, value)


def _storage_option(name: str, value: FieldValue) -> FieldValue:
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError("must be a string, number or boolean (a storage option)")
    return value


_Validator = Callable[[str, FieldValue], FieldValue]
_REQUIRED = object()
_FIELDS: dict[Kind, dict[str, tuple[_Validator, object]]] = {
    Kind.POSTGRES: {
        "dsn": (_text, _REQUIRED),
        "min_size": (_int_at_least(0), 1),
        "max_size": (_int_at_least(1), 10),
        "timeout": (_seconds, 30.0),
        "connect_timeout": (_seconds, 10.0),
        "statement_timeout": (_optional_seconds, None),
        "max_idle": (_seconds, 600.0),
        "application_name": (_text, "auto_workflow"),
    },
    Kind.FSSPEC: {"url": (_text, _REQUIRED)},
}
_OPEN_FIELDS = {Kind.FSSPEC: _storage_option}
"""Kinds whose other fields pass through (fsspec: storage options such as account_name)."""
_SECRET_FIELDS = {Kind.POSTGRES: frozenset({"dsn", "application_name"})}
"""Fields that may hold a ``secret://`` reference (open fields always may)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """One named, validated connector profile (secret references unresolved).

    Attributes:
        name: The profile's name, as ``connectors.get(name)`` takes it.
        kind: What it connects to.
        fields: Every field with defaults filled in; ``secret://KEY`` strings unresolved.
        source: Where it was defined, for error messages.
    """

    name: str
    kind: Kind
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    source: str = "code"

    def __getitem__(self, key: str) -> FieldValue:
        return self.fields[key]

    def __repr__(self) -> str:
        # Field values are left out: a literal DSN may carry a password.
        return f"Profile({self.name!r}, kind={self.kind.value!r}, source={self.source!r})"


def _kind(name: str, raw: Mapping[str, FieldValue], source: str) -> Kind:
    value = raw.get("kind")
    try:
        return Kind(str(value).strip().lower())
    except ValueError:
        valid = ", ".join(repr(k.value) for k in Kind)
        raise ProfileError(
            f"connector profile {name!r} (from {source}): field 'kind' is {value!r}; "
            f"valid kinds: {valid}"
        ) from None


def _checked(profile: str, kind: Kind, key: str, value: FieldValue, source: str) -> FieldValue:
    specs = _FIELDS[kind]
    is_secret = isinstance(value, str) and value.startswith(SECRET_SCHEME)
    if key in specs:
        if is_secret and key not in _SECRET_FIELDS.get(kind, ()):
            raise ProfileError(
                f"connector profile {profile!r} (from {source}): field {key!r} cannot be a "
                "secret:// reference"
            )
        validator = specs[key][0]
    elif kind in _OPEN_FIELDS:
        validator = _OPEN_FIELDS[kind]
    else:
        valid = ", ".join(["kind", *specs])
        raise ProfileError(
            f"connector profile {profile!r} (from {source}): unknown field {key!r} for kind "
            f"{kind.value!r}; valid fields: {valid}"
        )
    if is_secret:
        return value
    try:
        return validator(key, value)
    except ValueError as exc:
        raise ProfileError(
            f"connector profile {profile!r} (from {source}): field {key!r}={value!r} {exc}"
        ) from None


def make_profile(name: str, raw: Mapping[str, FieldValue], source: str = "code") -> Profile:
    """A validated profile from raw fields (``kind`` among them).

    Raises:
        ProfileError: a bad name, kind or field; the message says which and what is valid.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ProfileError(
            f"connector profile name {name!r} (from {source}): use letters, digits, '_' "
            "and '-', starting with a letter"
        )
    kind = _kind(name, raw, source)
    fields: dict[str, FieldValue] = {}
    for key, value in raw.items():
        if key != "kind":
            fields[key] = _checked(name, kind, key, value, source)
    for key, (_, default) in _FIELDS[kind].items():
        if key in fields:
            continue
        if default is _REQUIRED:
            raise ProfileError(
                f"connector profile {name!r} (from {source}): kind {kind.value!r} needs the "
                f"field {key!r}"
            )
        fields[key] = default  # type: ignore[assignment]  # the spec's default is a FieldValue
    _check_pool_sizes(name, kind, fields, source)
    return Profile(name=name, kind=kind, fields=fields, source=source)


def _check_pool_sizes(name: str, kind: Kind, fields: dict[str, FieldValue], source: str) -> None:
    if kind is Kind.POSTGRES and int(fields["min_size"] or 0) > int(fields["max_size"] or 0):
        raise ProfileError(
            f"connector profile {name!r} (from {source}): min_size={fields['min_size']} is "
            f"larger than max_size={fields['max_size']}"
        )


def _env_overlay(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``{PROFILE: {field: value}}`` from ``AUTO_WORKFLOW_CONNECTORS__<NAME>__<FIELD>``."""
    found: dict[str, dict[str, str]] = {}
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        name, sep, key = variable[len(ENV_PREFIX) :].partition("__")
        if not sep or not name or not key:
            raise ProfileError(
                f"environment variable {variable}: write {ENV_PREFIX}<NAME>__<FIELD>, "
                f"e.g. {ENV_PREFIX}WAREHOUSE__DSN"
            )
        found.setdefault(name.upper(), {})[key.lower()] = value
    return found


def _env_key(name: str) -> str:
    return name.upper().replace("-", "_")


def load_profiles(
    *, cwd: Path | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Profile]:
    """Every profile in pyproject.toml and the environment, validated now.

    Environment variables overlay the pyproject fields of the profile whose name, upper
    case with ``-`` as ``_``, matches; a name only the environment knows makes a profile
    named in lower case.

    Raises:
        ProfileError: a bad profile; the message names it, the field and the source.
    """
    env = os.environ if environ is None else environ
    try:
        pyproject, table = read_tool_table(cwd)
    except ValueError as exc:
        raise ProfileError(str(exc)) from None
    section = table.get("connectors", {})
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise ProfileError(
            f"[tool.auto_workflow.connectors] in {pyproject} must hold one table per "
            "profile: [tool.auto_workflow.connectors.<name>]"
        )
    raws: dict[str, tuple[dict[str, FieldValue], str]] = {
        name: (dict(fields), f"[tool.auto_workflow.connectors.{name}] in {pyproject}")
        for name, fields in section.items()
    }
    by_env_key = {_env_key(name): name for name in raws}
    for env_name, fields in _env_overlay(env).items():
        name = by_env_key.get(env_name, env_name.lower())
        raw, source = raws.get(name, ({}, ""))
        raw.update(fields)
        where = f"{ENV_PREFIX}{env_name}__*"
        raws[name] = (raw, f"{source} and {where}" if source else where)
    return {name: make_profile(name, raw, source) for name, (raw, source) in raws.items()}


def extra_for(kind: Kind) -> str:
    """The pip extra that ``kind`` needs."""
    return _EXTRAS[kind]


def is_sensitive(key: str) -> bool:
    """Whether the field ``key`` holds a credential even when written in plain text."""
    return bool(_SENSITIVE.search(key))


def resolve(profile: Profile) -> dict[str, FieldValue]:
    """The profile's fields with every ``secret://KEY`` looked up in the secrets provider.

    Each resolved value, and each plain value of a credential-like field, is registered
    for redaction (:func:`auto_workflow.history.register_secret`) before it is returned.

    Raises:
        ProfileError: a secret the provider does not have.
    """
    resolved: dict[str, FieldValue] = {}
    for key, value in profile.fields.items():
        if isinstance(value, str) and value.startswith(SECRET_SCHEME):
            value = _lookup(profile, key, value[len(SECRET_SCHEME) :])
            register_secret(value)
        elif isinstance(value, str) and is_sensitive(key):
            register_secret(value)
        resolved[key] = value
    return resolved


def _lookup(profile: Profile, key: str, secret_key: str) -> str:
    value = secret(secret_key)
    if value is None:
        raise ProfileError(
            f"connector profile {profile.name!r} (from {profile.source}): field {key!r} "
            f"refers to secret {secret_key!r}, which the secrets provider does not have "
            "(the default provider reads the environment variable of that name; see "
            "auto_workflow.secrets.set_secrets_provider)"
        )
    return value


def describe_fields(profile: Profile) -> dict[str, Any]:
    """The fields as safe to show: secret references kept, credential-like values hidden."""
    shown: dict[str, Any] = {}
    for key, value in profile.fields.items():
        plain_secret = isinstance(value, str) and not value.startswith(SECRET_SCHEME)
        shown[key] = "***" if plain_secret and (is_sensitive(key) or key == "dsn") else value
    return shown
