"""Merging the fragments of many registrations into one schema text, first come first served.

A :class:`SchemaMerger` takes registrations in order.  Each either fits (its root field is new
for its operation and its types agree with what is already declared) and is added, or is
refused with the reason, naming the script that got there first.  The merger never half-adds a
registration, so what it holds is always a consistent schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

from engine.graphql._model import ROOT_TYPES, FieldRegistration, Operation
from engine.graphql._sdl import Conflict, FieldShape, Fragment, Kind, Member, TypeDecl, merge_decls

PLACEHOLDER_FIELD = "placeholder"
PLACEHOLDER_VALUE = "No queries registered yet"
_PLACEHOLDER = Member(PLACEHOLDER_FIELD, f"{PLACEHOLDER_FIELD}: String")


@attrs.frozen
class MergedSchema:
    """The merged schema as text plus what execution needs to know about its fields."""

    sdl: str
    # Per operation, the registrations whose root fields made it in, in order.
    roots: Mapping[Operation, tuple[FieldRegistration, ...]]
    has_placeholder: bool
    custom_scalars: tuple[str, ...]
    # (type name, field name) -> declared output type, for every root and object field.
    shapes: Mapping[tuple[str, str], FieldShape]
    kinds: Mapping[str, Kind]


class SchemaMerger:
    def __init__(self) -> None:
        self._roots: dict[Operation, dict[str, tuple[FieldRegistration, Member]]] = {
            operation: {} for operation in ROOT_TYPES
        }
        self._types: dict[str, TypeDecl] = {}
        self._type_owner: dict[str, str] = {}
        self._member_owner: dict[tuple[str, str], str] = {}

    def problem(self, reg: FieldRegistration, fragment: Fragment) -> str | None:
        """Why ``reg`` cannot join what is merged so far, or None."""
        taken = self._roots[reg.operation].get(reg.name)
        if taken is not None:
            return f"the {reg.operation} field '{reg.name}' is already registered by " + _by(
                taken[0].script_uri, reg
            )
        for decl in fragment.types:
            known = self._types.get(decl.name)
            if known is None:
                continue
            merged = merge_decls(known, decl)
            if isinstance(merged, Conflict):
                owner = (
                    self._member_owner[(decl.name, merged.member)]
                    if merged.member is not None
                    else self._type_owner[decl.name]
                )
                return f"{merged.problem} by {_by(owner, reg)}"
        return None

    def add(self, reg: FieldRegistration, fragment: Fragment) -> str | None:
        """Add ``reg`` if it fits; returns the problem instead when it does not."""
        problem = self.problem(reg, fragment)
        if problem is not None:
            return problem
        self._roots[reg.operation][reg.name] = (reg, fragment.field)
        for decl in fragment.types:
            known = self._types.get(decl.name)
            if known is None:
                self._type_owner[decl.name] = reg.script_uri
                self._types[decl.name] = decl
            else:
                merged = merge_decls(known, decl)
                assert not isinstance(merged, Conflict)  # problem() said so
                self._types[decl.name] = merged
            for member in decl.members:
                self._member_owner.setdefault((decl.name, member.name), reg.script_uri)
        return None

    def result(self) -> MergedSchema:
        blocks: list[str] = []
        shapes: dict[tuple[str, str], FieldShape] = {}
        has_placeholder = not self._roots["query"]
        for operation, root in ROOT_TYPES.items():
            members = [member for _, member in self._roots[operation].values()]
            if operation == "query" and has_placeholder:
                members = [_PLACEHOLDER]
            if members:
                blocks.append(_block(f"type {root}", members))
            for member in members:
                if member.shape is not None:
                    shapes[(root, member.name)] = member.shape
        for decl in self._types.values():
            blocks.append(_type_sdl(decl))
            if decl.kind in ("type", "interface"):
                for member in decl.members:
                    if member.shape is not None:
                        shapes[(decl.name, member.name)] = member.shape
        return MergedSchema(
            sdl="\n\n".join(blocks) + "\n",
            roots=MappingProxyType(
                {op: tuple(reg for reg, _ in fields.values()) for op, fields in self._roots.items()}
            ),
            has_placeholder=has_placeholder,
            custom_scalars=tuple(d.name for d in self._types.values() if d.kind == "scalar"),
            shapes=MappingProxyType(shapes),
            kinds=MappingProxyType({d.name: d.kind for d in self._types.values()}),
        )


def _by(owner: str, reg: FieldRegistration) -> str:
    if owner == reg.script_uri:
        return "another registration of this script"
    return f"script '{owner}'"


def _type_sdl(decl: TypeDecl) -> str:
    head: str = decl.kind
    if decl.kind == "type" and decl.interfaces:
        head += f" {decl.name} implements {' & '.join(decl.interfaces)}{decl.directives}"
    else:
        head += f" {decl.name}{decl.directives}"
    if decl.description is not None:
        head = f"{decl.description}\n{head}"
    if decl.kind == "scalar":
        return head
    if decl.kind == "union":
        if not decl.members:
            return head
        return head + " = " + " | ".join(member.name for member in decl.members)
    return _block(head, decl.members)


def _block(head: str, members: list[Member] | tuple[Member, ...]) -> str:
    if not members:
        return head
    return head + " {\n" + "".join(f"  {member.sdl()}\n" for member in members) + "}"
