"""``ParityReport``: the rows of one comparison, its verdict, Markdown, JSON and a rich table.

JSON schema ``jaxcnn.parity/1`` (documented in ``docs/parity.md``; :data:`SCHEMA` checks it).
Every error is relative, ``max|jax - torch| / max|torch|`` (:mod:`jaxcnn.parity.rule`), and is
also the smallest tolerance under which that row passes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

ROOT = "(model)"  # the row of the whole model
SCHEMA_ID = "jaxcnn.parity/1"
AGREES, ROUNDING, SEMANTIC = "agrees", "float32 rounding", "semantic difference"


def verdict(error32: float | None, error64: float | None, rtol: float, rtol64: float) -> str | None:
    """``"agrees"`` (within ``rtol`` in float32), else ``"float32 rounding"`` when the float64 run of
    the same computation agrees within ``rtol64``, else ``"semantic difference"``; None if unknown."""
    if error32 is None:
        return None
    if error32 <= rtol:
        return AGREES
    if error64 is None:
        return None
    return ROUNDING if error64 <= rtol64 else SEMANTIC


@dataclass
class ModuleRow:
    """One call of one named submodule (torch's name), in torch's execution order (completion)."""

    name: str
    type: str
    call: int  # 0 for the first call of the module, 1 for the second, ...
    shape: list  # torch's (first) output shape, NCHW
    accumulated: float | None  # both models end to end
    isolated: float | None  # the jaxcnn submodule fed torch's input to it
    note: str = ""
    float64: dict | None = None  # {"isolated", "accumulated", "torch_vs_float64", "jax_vs_float64"}
    verdict: str | None = None


@dataclass
class TensorRow:
    """One tensor: a model output, the loss, a parameter's gradient, a buffer or weight."""

    kind: str  # "output", "loss", "gradient", "statistic", "weight", "after N steps"
    name: str
    shape: list
    error: float  # the judged relative error
    own_scale: float | None = None  # gradients: difference / the parameter's largest gradient
    model_scale: float | None = None  # gradients: difference / the model's largest gradient
    note: str = ""
    float64: dict | None = None  # {"error", "torch_vs_float64", "jax_vs_float64"}
    verdict: str | None = None


def _ok(error: float | None, row_verdict: str | None, rtol: float) -> bool:
    return error is None or error <= rtol or row_verdict == ROUNDING


@dataclass
class ParityReport:
    """The result of :func:`jaxcnn.parity.compare`."""

    torch_model: str
    jax_model: str
    mode: str
    steps: int
    rtol: float
    reference: str | None
    input_shape: list
    labels: list | None = None
    modules: list[ModuleRow] = field(default_factory=list)
    tensors: list[TensorRow] = field(default_factory=list)
    error: str | None = None  # the jaxcnn model raised when run end to end
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ verdicts

    def module_passed(self, row: ModuleRow) -> bool:
        return _ok(row.isolated, row.verdict, self.rtol)

    def tensor_passed(self, row: TensorRow) -> bool:
        return _ok(row.error, row.verdict, self.rtol)

    @property
    def passed(self) -> bool:
        """Every module's isolated error and every tensor's error within ``rtol`` (with
        ``reference="float64"``: or classified as float32 rounding), and no error running."""
        return (
            self.error is None
            and not self.notes
            and all(map(self.module_passed, self.modules))
            and all(map(self.tensor_passed, self.tensors))
        )

    @property
    def first_divergence(self) -> str | None:
        """The first module, in execution order, whose isolated error exceeds the tolerance and
        none of whose submodules does (a container's isolated run includes its children's).

        When every module agrees but a gradient or buffer does not, the module owning the first
        such tensor; the whole model (``"(model)"``) when it cannot be narrowed down. None when
        everything agrees.
        """
        failing = [row for row in self.modules if not self.module_passed(row)]
        names = {row.name for row in failing}

        def has_failing_child(name: str) -> bool:
            return any(other != name and (name == ROOT or other.startswith(name + ".")) for other in names)

        for row in failing:
            if not has_failing_child(row.name):
                return row.name
        order = {row.name: index for index, row in enumerate(self.modules)}
        owners = []
        for row in self.tensors:
            if not self.tensor_passed(row):
                owner = row.name.rsplit(".", 1)[0] if "." in row.name else ROOT
                owners.append((order.get(owner, len(order)), owner if owner in order else ROOT))
        if owners:
            return min(owners)[1]
        return ROOT if self.error or self.notes else None

    @property
    def min_rtol(self) -> float:
        """The smallest tolerance under which the whole report passes (ignoring rounding verdicts)."""
        errors = [row.isolated for row in self.modules if row.isolated is not None]
        errors += [row.error for row in self.tensors]
        return max(errors, default=0.0)

    def row(self, name: str) -> ModuleRow:
        """The (first call's) row of module ``name``."""
        return next(row for row in self.modules if row.name == name)

    def tensor(self, name: str, kind: str | None = None) -> TensorRow:
        return next(row for row in self.tensors if row.name == name and (kind is None or row.kind == kind))

    def failure_message(self) -> str:
        """One paragraph: the first divergent module, its error, and the worst failing tensors."""
        if self.passed:
            return f"parity holds at rtol {self.rtol:g} (smallest passing tolerance {self.min_rtol:.2g})"
        lines = []
        first = self.first_divergence
        module = next((row for row in self.modules if row.name == first), None)
        if module is not None and not self.module_passed(module):
            lines.append(
                f"first divergence: {first} ({module.type}): isolated error {_fmt(module.isolated)} > rtol {self.rtol:g}"
                f" (accumulated {_fmt(module.accumulated) or 'not measured'})" + (f"; {module.note}" if module.note else "")
                + (f"; {module.verdict}" if module.verdict else "")
            )
        else:
            lines.append(f"first divergence: {first}")
        if first == ROOT and module is not None and not self.module_passed(module):
            lines.append(
                "every submodule agrees in isolation: the difference is in the model's own forward code "
                "(functional calls between submodules: a flatten order, an activation, a residual sum)"
            )
        if self.error:
            lines.append(f"the jaxcnn model raised end to end: {self.error}")
        lines += self.notes
        bad = sorted((row for row in self.tensors if not self.tensor_passed(row)), key=lambda row: -row.error)
        for row in bad[:5]:
            lines.append(f"{row.name if row.name.startswith(row.kind) else row.kind + ' ' + row.name}: error {_fmt(row.error)}" + (f" ({row.note})" if row.note else "") + (f"; {row.verdict}" if row.verdict else ""))
        if len(bad) > 5:
            lines.append(f"... and {len(bad) - 5} more tensors")
        return "\n".join(lines)

    # ------------------------------------------------------------------ output

    def to_dict(self) -> dict:
        """The report as the documented JSON document (``schema == "jaxcnn.parity/1"``)."""

        def clean(value):
            if isinstance(value, float) and not math.isfinite(value):
                return None if math.isnan(value) else "inf"
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        modules = []
        for row in self.modules:
            item = asdict(row)
            item["passed"] = self.module_passed(row)
            modules.append(clean(item))
        tensors = []
        for row in self.tensors:
            item = asdict(row)
            item["passed"] = self.tensor_passed(row)
            tensors.append(clean(item))
        return clean(
            {
                "schema": SCHEMA_ID,
                "torch_model": self.torch_model,
                "jax_model": self.jax_model,
                "mode": self.mode,
                "steps": self.steps,
                "rtol": self.rtol,
                "reference": self.reference,
                "input_shape": self.input_shape,
                "labels": self.labels,
                "passed": self.passed,
                "first_divergence": self.first_divergence,
                "min_rtol": self.min_rtol,
                "error": self.error,
                "notes": self.notes,
                "modules": modules,
                "tensors": tensors,
            }
        )

    def to_json(self, path=None, *, indent: int = 1) -> str:
        """The JSON document as text (also written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            from pathlib import Path

            Path(path).write_text(text + "\n")
        return text

    def summary(self) -> str:
        """One line: PASS/FAIL, the pair, the tolerance, the first divergence."""
        status = "PASS" if self.passed else "FAIL"
        text = f"{status}: torch {self.torch_model} vs jaxcnn {self.jax_model}, {self.mode} mode"
        text += f", {self.steps} steps" if self.steps else ""
        text += f", input NCHW {'x'.join(map(str, self.input_shape))}, rtol {self.rtol:g}; smallest passing tolerance {self.min_rtol:.2g}"
        if not self.passed:
            text += f"; first divergence: {self.first_divergence}"
        return text

    def _module_columns(self):
        columns = ["module", "type", "output (NCHW)", "accumulated", "isolated"]
        if self.reference:
            columns += ["isolated float64", "verdict"]
        return columns

    def _module_cells(self, row: ModuleRow) -> list[str]:
        name = row.name + (f" (call {row.call + 1})" if row.call else "")
        cells = [name, row.type, "x".join(map(str, row.shape)), _fmt(row.accumulated), _fmt(row.isolated)]
        if self.reference:
            cells += [_fmt((row.float64 or {}).get("isolated")), row.verdict or ""]
        mark = "" if self.module_passed(row) else " ✗"
        cells[4] += mark
        if row.note:
            cells[1] += f" [{row.note}]"
        return cells

    def _tensor_columns(self):
        columns = ["kind", "tensor", "shape", "error", "own scale", "model scale"]
        if self.reference:
            columns += ["float64", "torch vs float64", "jax vs float64", "verdict"]
        return columns

    def _tensor_cells(self, row: TensorRow) -> list[str]:
        cells = [row.kind, row.name, "x".join(map(str, row.shape)), _fmt(row.error) + ("" if self.tensor_passed(row) else " ✗"),
                 _fmt(row.own_scale), _fmt(row.model_scale)]  # fmt: skip
        if self.reference:
            f64 = row.float64 or {}
            cells += [_fmt(f64.get("error")), _fmt(f64.get("torch_vs_float64")), _fmt(f64.get("jax_vs_float64")), row.verdict or ""]
        if row.note:
            cells[1] += f" [{row.note}]"
        return cells

    def markdown(self) -> str:
        """The report as Markdown: a summary line, the module table and the tensor table."""
        lines = [self.summary(), ""]
        for columns, rows in ((self._module_columns(), [self._module_cells(r) for r in self.modules]),
                              (self._tensor_columns(), [self._tensor_cells(r) for r in self.tensors])):  # fmt: skip
            if not rows:
                continue
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "---|" * len(columns))
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in rows]
            lines.append("")
        lines.append(
            "Errors are `max|jax - torch| / max|torch|`, each the smallest tolerance under which its row passes; "
            "*accumulated*: both models end to end; *isolated*: the jaxcnn module fed torch's input to it. "
            + ("Verdicts: `float32 rounding` when the float64 run of the same computation agrees (both sides equally far "
               "from float64), `semantic difference` when it does not. " if self.reference else "")  # fmt: skip
            + "✗ marks rows over the tolerance."
        )
        return "\n".join(lines)

    def rich_tables(self, *, failing_only: bool = False):
        """The module and tensor tables as ``rich.table.Table`` objects (``failing_only``: rows over the tolerance)."""
        from rich.table import Table

        tables = []
        for title, columns, rows in (
            ("modules, in execution order", self._module_columns(), self.modules),
            ("tensors", self._tensor_columns(), self.tensors),
        ):
            if not rows:
                continue
            table = Table(title=title, title_justify="left")
            for column in columns:
                table.add_column(column, overflow="fold")
            for row in rows:
                ok = self.module_passed(row) if isinstance(row, ModuleRow) else self.tensor_passed(row)
                if ok and failing_only:
                    continue
                cells = self._module_cells(row) if isinstance(row, ModuleRow) else self._tensor_cells(row)
                table.add_row(*cells, style=None if ok else "bold red")
            tables.append(table)
        return tables

    def print(self, console=None, *, failing_only: bool = False) -> None:
        """Print the tables and the summary to a ``rich`` console (stdout by default)."""
        from rich.console import Console

        import sys

        console = console or Console(width=None if sys.stdout.isatty() else 200)
        for table in self.rich_tables(failing_only=failing_only):
            if table.row_count:
                console.print(table)
        console.print(("[green]" if self.passed else "[bold red]") + self.summary())
        if not self.passed:
            console.print(self.failure_message(), markup=False)

    def __str__(self) -> str:
        import io

        from rich.console import Console

        console = Console(width=160, record=True, file=io.StringIO(), color_system=None)
        self.print(console)
        return console.export_text()


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.1e}"


# The JSON document's schema (JSON Schema draft 2020-12): checked by tests/test_parity_api.py.
_NUMBER = {"type": ["number", "null", "string"]}  # "inf" as a string, null when not measured
_FLOAT64_MODULE = {
    "type": ["object", "null"],
    "properties": {k: _NUMBER for k in ("isolated", "accumulated", "torch_vs_float64", "jax_vs_float64")},
    "required": ["isolated", "accumulated", "torch_vs_float64", "jax_vs_float64"],
}
_FLOAT64_TENSOR = {
    "type": ["object", "null"],
    "properties": {k: _NUMBER for k in ("error", "torch_vs_float64", "jax_vs_float64")},
    "required": ["error", "torch_vs_float64", "jax_vs_float64"],
}
_VERDICT = {"enum": [AGREES, ROUNDING, SEMANTIC, None]}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schema", "torch_model", "jax_model", "mode", "steps", "rtol", "reference", "input_shape", "labels",
                 "passed", "first_divergence", "min_rtol", "error", "notes", "modules", "tensors"],  # fmt: skip
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "torch_model": {"type": "string"},
        "jax_model": {"type": "string"},
        "mode": {"enum": ["eval", "train"]},
        "steps": {"type": "integer", "minimum": 0},
        "rtol": {"type": "number"},
        "reference": {"enum": [None, "float64"]},
        "input_shape": {"type": "array", "items": {"type": "integer"}},
        "labels": {"type": ["array", "null"], "items": {"type": "integer"}},
        "passed": {"type": "boolean"},
        "first_divergence": {"type": ["string", "null"]},
        "min_rtol": _NUMBER,
        "error": {"type": ["string", "null"]},
        "notes": {"type": "array", "items": {"type": "string"}},
        "modules": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "type", "call", "shape", "accumulated", "isolated", "note", "float64", "verdict", "passed"],
                "properties": {
                    "name": {"type": "string"},
                    "type": {"type": "string"},
                    "call": {"type": "integer", "minimum": 0},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "accumulated": _NUMBER,
                    "isolated": _NUMBER,
                    "note": {"type": "string"},
                    "float64": _FLOAT64_MODULE,
                    "verdict": _VERDICT,
                    "passed": {"type": "boolean"},
                },
            },
        },
        "tensors": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["kind", "name", "shape", "error", "own_scale", "model_scale", "note", "float64", "verdict", "passed"],
                "properties": {
                    "kind": {"type": "string", "pattern": "^(output|loss|gradient|statistic|weight|after [0-9]+ steps)$"},
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "error": _NUMBER,
                    "own_scale": _NUMBER,
                    "model_scale": _NUMBER,
                    "note": {"type": "string"},
                    "float64": _FLOAT64_TENSOR,
                    "verdict": _VERDICT,
                    "passed": {"type": "boolean"},
                },
            },
        },
    },
}
