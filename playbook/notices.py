"""Who is told, and in which words: the playbook's Key Contacts and Communication Templates.

The contacts are data (`deployments/contacts.yaml`, or `$ROLLBACK_FLOWS_CONTACTS`): each has a
role, a handle and when to notify it. The notices are Jinja2 templates (`deployments/notices/`,
or `$ROLLBACK_FLOWS_NOTICES`) an operator edits without touching code; a value a template uses
that the flow did not give is an error, never a blank.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field, model_validator

from playbook.config_files import parse_yaml, read_config_text, validated
from playbook.errors import InvalidInputError
from playbook.rollout import PodState

CONTACTS_ENV = "ROLLBACK_FLOWS_CONTACTS"
NOTICES_ENV = "ROLLBACK_FLOWS_NOTICES"
_DEPLOYMENTS = Path(__file__).resolve().parent.parent / "deployments"
DEFAULT_CONTACTS_FILE = _DEPLOYMENTS / "contacts.yaml"
DEFAULT_NOTICES_DIR = _DEPLOYMENTS / "notices"

When = Literal["always", "infrastructure", "model", "users"]

# Pods that cannot start for a reason of the platform, not of the release's code.
INFRASTRUCTURE_WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "RegistryUnavailable",
        "Unschedulable",
    }
)
MODEL_INDICATORS = frozenset({"rag_quality_ndcg"})
USER_INDICATORS = frozenset({"availability", "user_complaints"})


class Contact(BaseModel):
    """One row of the playbook's Key Contacts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str = Field(min_length=1)
    handle: str = Field(min_length=1)
    notify: When


class Contacts(BaseModel):
    """The contacts table and whose handle leads an incident."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contacts: tuple[Contact, ...] = Field(min_length=1)
    lead: str = Field(min_length=1)
    """The role whose handle is the incident's Lead in every notice."""

    @model_validator(mode="after")
    def _lead_is_a_role(self) -> Contacts:
        if not any(c.role == self.lead for c in self.contacts):
            roles = ", ".join(c.role for c in self.contacts)
            raise ValueError(f"lead {self.lead!r} is not a role of the contacts ({roles})")
        if not any(c.notify == "always" for c in self.contacts):
            raise ValueError("no contact is notified always: nobody would hear of a rollback")
        return self

    @property
    def lead_handle(self) -> str:
        """The handle of the lead role."""
        return next(c.handle for c in self.contacts if c.role == self.lead)


def parse_contacts(text: str, source: str = "contacts") -> Contacts:
    """Validate the YAML text of the contacts file."""
    raw = parse_yaml(text, source)
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{source} must be a mapping")
    return validated(Contacts, raw, source)


def load_contacts(path: Path | None = None) -> Contacts:
    """Read and validate the contacts (`$ROLLBACK_FLOWS_CONTACTS` or the shipped file)."""
    text, source = read_config_text(path, CONTACTS_ENV, DEFAULT_CONTACTS_FILE, "contacts")
    return parse_contacts(text, source)


@dataclass(frozen=True)
class Cause:
    """What is known of why the service is in trouble, for choosing whom to tell."""

    breached: frozenset[str] = frozenset()
    """Decision-matrix indicators past their critical threshold (the alert's, the monitor's)."""
    infrastructure: tuple[str, ...] = ()
    """Evidence of an infrastructure cause, e.g. `pod rag-api-x: ImagePullBackOff`."""


@dataclass(frozen=True)
class Mention:
    """A contact a notice mentions, and why."""

    handle: str
    role: str
    why: str

    def __str__(self) -> str:
        return f"{self.handle} ({self.role}: {self.why})"


def infrastructure_evidence(
    pods: Iterable[PodState] = (), api_errors: Iterable[str] = ()
) -> tuple[str, ...]:
    """The facts that point at the platform: pods waiting for an infrastructure reason (image
    pulls, unschedulable) and errors of the Kubernetes API or its nodes."""
    found = [
        f"pod {p.name}: {reason}"
        for p in pods
        for reason in p.waiting_reasons
        if reason in INFRASTRUCTURE_WAITING_REASONS
    ]
    return (*found, *api_errors)


def mentions(contacts: Contacts, cause: Cause) -> tuple[Mention, ...]:
    """Exactly the contacts the facts call for, each with the reason it was included."""
    out: list[Mention] = []
    model = sorted(cause.breached & MODEL_INDICATORS)
    users = sorted(cause.breached & USER_INDICATORS)
    for c in contacts.contacts:
        why: str | None = None
        if c.notify == "always":
            why = "every rollback"
        elif c.notify == "infrastructure" and cause.infrastructure:
            shown = "; ".join(cause.infrastructure[:3])
            more = len(cause.infrastructure) - 3
            why = f"infrastructure: {shown}" + (f" (+{more} more)" if more > 0 else "")
        elif c.notify == "model" and model:
            why = f"model-related: {', '.join(model)} breached"
        elif c.notify == "users" and users:
            why = f"users affected: {', '.join(users)} breached"
        if why is not None:
            out.append(Mention(c.handle, c.role, why))
    return tuple(out)


def notices_dir() -> Path:
    """Where the notice templates are: `$ROLLBACK_FLOWS_NOTICES` or the shipped directory."""
    return Path(os.environ.get(NOTICES_ENV) or DEFAULT_NOTICES_DIR)


def render_notice(name: str, values: Mapping[str, Any], directory: Path | None = None) -> str:
    """The notice `name` (`<name>.txt.j2` in the templates directory) with `values`.

    Raises:
        InvalidInputError: no such template, a syntax error in it, or a value it uses that
            was not given.
    """
    where = directory or notices_dir()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(where),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    file = f"{name}.txt.j2"
    try:
        text = env.get_template(file).render(**values)
    except jinja2.TemplateNotFound:
        raise InvalidInputError(f"no notice template {file} in {where}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidInputError(
            f"notice template {where / file}, line {exc.lineno}: {exc}"
        ) from None
    except jinja2.UndefinedError as exc:
        raise InvalidInputError(f"notice template {where / file}: {exc.message}") from None
    return text.strip() + "\n"


def duration_text(seconds: float) -> str:
    """A duration as a person reads it: `45 s`, `12 min 5 s`, `1 h 3 min`."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"
