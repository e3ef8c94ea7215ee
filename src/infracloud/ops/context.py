"""Who is acting: the caller of the API request being served, an agent, or one of the
controller's own loops. Events take their actor from here."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Touched:
    """A resource a request changed (recorded by the event hook, read by the API event)."""

    resource_type: str
    resource_id: str
    name: str | None
    project_id: str | None
    host: str | None
    created: bool = False  # the request made it (its API event names it)


@dataclass
class Actor:
    """Mutable on purpose: the request's middleware puts one in the context, the token check
    fills in the caller, and the worker threads the request runs on share the same object."""

    name: str = "system"
    user_id: str | None = None
    project_id: str | None = None
    request_id: str | None = None
    client: str | None = None  # the request's client address
    touched: list[Touched] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # added to the API event's detail


SYSTEM = Actor()
_current: contextvars.ContextVar[Actor | None] = contextvars.ContextVar(
    "infracloud_actor", default=None)


def current() -> Actor:
    return _current.get() or SYSTEM


def identify(name: str, user_id: str | None = None, project_id: str | None = None) -> None:
    """Name the caller of the request being served (no-op outside a request)."""
    actor = _current.get()
    if actor is not None:
        actor.name, actor.user_id, actor.project_id = name, user_id, project_id


def begin(actor: Actor) -> contextvars.Token[Actor | None]:
    return _current.set(actor)


def end(token: contextvars.Token[Actor | None]) -> None:
    _current.reset(token)


@contextmanager
def acting(name: str) -> Iterator[Actor]:
    """Run a block as `name` (a loop of the controller: 'system:reaper', an agent...)."""
    actor = Actor(name=name)
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)


def note(resource: Touched | None = None, **values: str) -> None:
    """Tell the request's API event more than its route says (`values` join its detail; an
    instance action's name, say), and the resource it is about when no state change named one
    (no-op outside a request)."""
    actor = _current.get()
    if actor is None:
        return
    actor.notes.update(values)
    if resource is not None and all(t.resource_id != resource.resource_id
                                    for t in actor.touched):
        actor.touched.append(resource)
