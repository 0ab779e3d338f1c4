"""jobs/plans.py: what an aggregate of a plan's transcribe tasks names each item."""

from __future__ import annotations

import textwrap
from pathlib import Path

from scribefleet.jobs.plans import aggregate_items
from scribefleet.plans import load_plan


def test_an_aggregate_names_a_url_item_without_its_query(tmp_path: Path) -> None:
    # the section of a signed URL was headed 'talk.wav?X-Amz-Signature=...': its secret in the aggregate's output
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(textwrap.dedent("""
        tasks:
          - {id: talk, kind: transcribe, input: "https://media.example.org/a/talk.wav?X-Amz-Signature=s3cr3t", out: out, formats: txt}
          - {id: local, kind: transcribe, input: "media/day 1.wav", out: out, formats: txt}
          - {id: all, kind: aggregate, needs: [talk, local], output: out/all.md}
        """))
    plan = load_plan(plan_file)
    by_id = {t.id: t for t in plan.tasks}
    items = aggregate_items(by_id["all"], by_id)
    assert [i["name"] for i in items] == ["talk.wav", "day 1.wav"]
    assert items[0]["files"] == {"txt": str(tmp_path / "out" / "talk.txt")}
