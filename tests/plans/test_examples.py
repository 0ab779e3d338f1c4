"""The example plans in examples/plans/ load, and the YAML and plan.md versions are the same plan."""

from __future__ import annotations

from pathlib import Path

from scribefleet.plans import load_plan

EXAMPLES = Path(__file__).parents[2] / "examples" / "plans"
SAMPLES = Path(__file__).parents[2] / "samples"


def test_yaml_and_markdown_examples_expand_to_the_same_graph() -> None:
    from_yaml = load_plan(EXAMPLES / "digest.yaml")
    from_md = load_plan(EXAMPLES / "plan.md")
    assert from_yaml.name == from_md.name == "samples-digest"
    strip = lambda plan: [t.model_dump(exclude={"line"}) for t in plan.tasks]  # noqa: E731
    assert strip(from_yaml) == strip(from_md)
    assert [t.line for t in from_md.tasks] != [t.line for t in from_yaml.tasks]  # lines of each own file


def test_digest_example_covers_every_kind_and_edge_rule() -> None:
    plan = load_plan(EXAMPLES / "digest.yaml", overrides={"out": "/tmp/digest-out"})
    stems = sorted(p.stem for p in SAMPLES.iterdir() if p.is_file())
    assert [t.item and Path(t.item).stem for t in plan.group("transcribe")] == stems
    assert {t.kind for t in plan.tasks} == {"transcribe", "llm", "aggregate", "shell"}
    first = stems[0]
    summary = plan.task(f"summary:{first}")
    assert summary.needs == [f"transcribe:{first}"]
    assert summary.spec["input"] == f"/tmp/digest-out/transcripts/{first}.txt"
    assert plan.task("index").needs == [f"transcribe:{s}" for s in stems]
    assert plan.task("archive").needs == ["index", "digest"]
    run = plan.task("archive").spec["run"]
    assert 'cd "/tmp/digest-out"' in run and "$(date +%Y%m%d)" in run and "$USER" in run
    assert plan.tasks[-1].id == "archive"
