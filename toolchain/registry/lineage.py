"""Lineage: from any record back to the dataset version it came from.

The registry's links point from a record to its inputs (build -> ONNX, INT8 ONNX -> FP32 ONNX +
calibration dataset + model, ONNX -> model, model -> run + dataset, run -> dataset, dataset -> parent
version). Walking them upstream gives a DAG; it is returned as a tree in which a record reached a
second time is marked ``seen`` instead of being expanded again. Evaluations and benchmarks point at
what they measured, so each node also lists the ones that measured it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolchain.registry.ops import record_ref, resolve_record, summarize
from toolchain.registry.records import Record

if TYPE_CHECKING:  # the workspace sits above the registry: only its type is named here
    from toolchain.workspace import Workspace

# Downstream records that judge a node rather than being made from it.
MEASUREMENT_KINDS = ("evaluation", "benchmark")


@dataclass(frozen=True, kw_only=True)
class LineageNode:
    """One record in a lineage tree.

    Attributes:
        record: The record.
        ref: ``NAME@vN`` or an id prefix.
        role: How the record below used it (``onnx``, ``fp32``, ``calibration_data`` ...); empty at the root.
        inputs: What it was made from (empty for a node already shown elsewhere in the tree).
        seen: True when the record is expanded elsewhere in the tree (where it is nearest the root).
        measurements: Evaluations and benchmarks of this record.
    """

    record: Record
    ref: str
    role: str
    inputs: tuple[LineageNode, ...]
    seen: bool
    measurements: tuple[tuple[Record, str], ...]

    def to_json(self) -> dict[str, Any]:
        node: dict[str, Any] = {
            "id": self.record.id, "kind": self.record.kind, "name": self.record.name, "ref": self.ref, "role": self.role,
        }
        if self.seen:
            node["seen"] = True
            return node
        node["created_at"] = self.record.created_at
        node["summary"] = summarize(self.record)
        node["measurements"] = [
            {"id": m.id, "kind": m.kind, "ref": ref, "summary": summarize(m)} for m, ref in self.measurements
        ]
        node["inputs"] = [child.to_json() for child in self.inputs]
        return node


@dataclass(frozen=True, kw_only=True)
class Lineage:
    """The lineage tree of one record plus the flat set of records in it."""

    root: LineageNode
    records: tuple[tuple[Record, str, tuple[str, ...]], ...]  # (record, ref, roles it was reached by)

    def first(self, kind: str, role: str | None = None) -> Record | None:
        """The first record of ``kind`` (reached by ``role``, if given) in breadth-first order."""
        for record, _, roles in self.records:
            if record.kind == kind and (role is None or role in roles):
                return record
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root.to_json(),
            "records": [
                {"id": r.id, "kind": r.kind, "name": r.name, "ref": ref, "roles": list(roles)}
                for r, ref, roles in self.records
            ],
        }


def lineage(
    workspace: Workspace, ref: str, *, kind: str | None = None, target: str | None = None, max_depth: int = 32,
) -> Lineage:
    """The lineage of the record ``ref`` names (any kind, or ``kind``).

    Args:
        workspace: Workspace to read.
        ref: Record reference (id prefix, ``NAME@vN``, ``NAME@ALIAS`` ...).
        kind: Restrict the reference to one kind.
        target: Target whose alias ``NAME@ALIAS`` means.
        max_depth: Safety bound on the walk (records cannot form cycles, their ids are digests of
            their inputs, but a foreign store might).
    """
    start = resolve_record(workspace, ref, kind=kind, target=target).record
    return lineage_of(workspace, start, max_depth=max_depth)


def lineage_of(workspace: Workspace, start: Record, *, max_depth: int = 32) -> Lineage:
    """The lineage of ``start``: see :func:`lineage`."""
    registry = workspace.registry
    refs: dict[str, str] = {}
    roles: dict[str, list[str]] = {}
    order: list[Record] = []

    def ref_of(record: Record) -> str:
        if record.id not in refs:
            refs[record.id] = record_ref(workspace, record)
        return refs[record.id]

    # Breadth-first first, so "first seen" (and the expanded copy of a shared input) is the one
    # nearest to the root: int8 -> model directly, not via fp32 -> model.
    depth_of: dict[str, int] = {start.id: 0}
    records: dict[str, Record] = {start.id: start}
    queue = [start]
    roles[start.id] = []
    while queue:
        record = queue.pop(0)
        order.append(record)
        if depth_of[record.id] >= max_depth:
            continue
        for link in registry.links_from(record.id):
            roles.setdefault(link.input_id, [])
            if link.role not in roles[link.input_id]:
                roles[link.input_id].append(link.role)
            if link.input_id in records:
                continue
            found = registry.get(link.input_id)
            if found is None:
                continue
            records[found.id] = found
            depth_of[found.id] = depth_of[record.id] + 1
            queue.append(found)

    expanded: set[str] = set()

    def build(record: Record, role: str, depth: int) -> LineageNode:
        # Expand a record where breadth-first reached it first (its shallowest depth).
        if record.id in expanded or depth != depth_of[record.id]:
            return LineageNode(record=record, ref=ref_of(record), role=role, inputs=(), seen=True, measurements=())
        expanded.add(record.id)
        children = []
        if depth < max_depth:
            for link in registry.links_from(record.id):
                if link.input_id in records:
                    children.append(build(records[link.input_id], link.role, depth + 1))
        measurements = []
        for link in registry.links_to(record.id):
            if link.role.endswith("_data"):  # an evaluation *on* a dataset measures a model, not the data
                continue
            other = registry.get(link.record_id)
            if other is not None and other.kind in MEASUREMENT_KINDS:
                measurements.append((other, ref_of(other)))
        return LineageNode(record=record, ref=ref_of(record), role=role, inputs=tuple(children), seen=False,
                           measurements=tuple(measurements))

    root = build(start, "", 0)
    flat = tuple((r, ref_of(r), tuple(roles.get(r.id, ()))) for r in order)
    return Lineage(root=root, records=flat)
