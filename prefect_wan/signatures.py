"""Parameters declared once and shared by many entry points (the flows, the CLI's commands).

A function takes a group of parameters as one typed argument (a pydantic model or a dataclass);
``expand_groups`` gives it a signature in which each field of the group is a parameter of its
own, so Prefect (parameter schema, validation of deployment runs, the UI's form) and Typer (the
command's options) see every parameter, while the body receives the group built from them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Annotated, Any, Callable, TypeVar, cast, get_type_hints

from pydantic import BaseModel

R = TypeVar("R")


def _is_group(annotation: Any) -> bool:
    return inspect.isclass(annotation) and (issubclass(annotation, ParameterGroup) or hasattr(annotation, "__parameter_group__"))


class ParameterGroup(BaseModel):
    """Base of the pydantic parameter groups; each field becomes a parameter (its description documents it)."""


def parameter_group(cls: type) -> type:
    """Mark a dataclass as a parameter group (its fields' defaults may be Typer options)."""
    cls.__parameter_group__ = True  # type: ignore[attr-defined]
    return cls


def _annotated(annotation: Any, metadata: list[Any]) -> Any:
    return Annotated.__class_getitem__((annotation, *metadata)) if metadata else annotation  # type: ignore[attr-defined]


def _fields(group: type) -> list[tuple[str, Any, Any, str]]:
    """(name, annotation, default, description) of every field of a group."""
    if issubclass(group, BaseModel):
        # Constraints (ge=, le=...) stay on the annotation, so Prefect validates and shows them too.
        return [
            (
                name,
                _annotated(info.annotation, info.metadata),
                info.get_default(call_default_factory=True),
                info.description or "",
            )
            for name, info in group.model_fields.items()
        ]
    hints = get_type_hints(group)
    return [(f.name, hints[f.name], f.default, "") for f in dataclasses.fields(cast(Any, group))]


def _documented(doc: str, lines: list[str]) -> str:
    """The docstring with the groups' fields added to its ``Args:`` section (Prefect reads it)."""
    if not lines:
        return doc
    doc = inspect.cleandoc(doc)
    head, found, tail = doc.partition("\n\nReturns:")
    return head + "\n" + "\n".join(f"    {line}" for line in lines) + (found + tail if found else "")


def expand_groups(fn: Callable[..., R]) -> Callable[..., R]:
    """``fn`` with each parameter annotated by a group replaced by the group's fields (keyword-only)."""
    signature = inspect.signature(fn, eval_str=True)
    groups = {name: p.annotation for name, p in signature.parameters.items() if _is_group(p.annotation)}
    own = [p for name, p in signature.parameters.items() if name not in groups]
    shared = [
        (group_name, field, annotation, default, description)
        for group_name, group in groups.items()
        for field, annotation, default, description in _fields(group)
    ]
    names = [p.name for p in own] + [field for _, field, *_ in shared]
    if len(set(names)) != len(names):
        raise TypeError(f"{fn.__name__}: a group repeats a parameter of its own ({names})")
    parameters = own + [
        inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation) for _, field, annotation, default, _ in shared
    ]
    # Keyword-only parameters must follow every positional one (a **kwargs of fn's would be last).
    parameters.sort(key=lambda p: p.kind)
    flat = signature.replace(parameters=parameters)

    def regroup(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = flat.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        for group_name, group in groups.items():
            fields = {field: values.pop(field) for name, field, *_ in shared if name == group_name}
            values[group_name] = group(**fields)
        return values

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await fn(**regroup(args, kwargs))

        wrapper: Callable[..., Any] = async_wrapper
    else:

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(**regroup(args, kwargs))

        wrapper = sync_wrapper
    wrapper.__signature__ = flat  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters} | (
        {"return": signature.return_annotation} if signature.return_annotation is not inspect.Signature.empty else {}
    )
    wrapper.__doc__ = _documented(fn.__doc__ or "", [f"{field}: {description}" for _, field, _, _, description in shared if description])
    del wrapper.__wrapped__  # type: ignore[attr-defined]  # inspect.signature must not look past the flat one
    return cast(Callable[..., R], wrapper)
