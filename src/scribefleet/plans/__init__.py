"""Plan files: a batch described as a graph of tasks (seed 000's plan.md).

    from scribefleet.plans import load_plan
    plan = load_plan(Path("plan.yaml"), overrides={"out": "/data/out"})
    for task in plan.tasks:          # expanded, validated, in dependency order
        store.add(key=task.id, kind=task.kind, spec=task.spec, needs=task.needs, ...)

The file format is documented in docs/plans.md; the modules are:
source.py (YAML / Markdown, line numbers, problems), variables.py (${...}),
specs.py (the fields of each kind), expand.py (foreach, needs, cycles),
model.py (Plan, PlanTask, graph text), loader.py (load_plan).
"""

from scribefleet.plans.loader import load_plan, parse_plan
from scribefleet.plans.model import Plan, PlanTask
from scribefleet.plans.specs import KINDS, SPECS, AggregateSpec, LlmSpec, ShellSpec, TranscribeSpec

__all__ = [
    "KINDS",
    "SPECS",
    "AggregateSpec",
    "LlmSpec",
    "Plan",
    "PlanTask",
    "ShellSpec",
    "TranscribeSpec",
    "load_plan",
    "parse_plan",
]
