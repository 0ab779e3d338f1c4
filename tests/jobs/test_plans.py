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


def test_a_transcribe_input_that_is_a_folder_or_a_glob_is_a_plan_error_with_the_foreach_to_write(tmp_path: Path) -> None:
    # both passed `plan check` and failed at run time: MEDIA_UNREADABLE "not a regular file", INPUT_NOT_FOUND
    import pytest

    from scribefleet.errors import PlanInvalid
    from scribefleet.jobs.plans import check_graph

    (tmp_path / "media").mkdir()
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(textwrap.dedent("""
        tasks:
          - {id: folder, kind: transcribe, input: media, out: a}
          - {id: glob, kind: transcribe, input: "media/*.wav", out: b}
          - {id: later, kind: transcribe, input: "made/by [shell].wav", out: c}
        """))
    with pytest.raises(PlanInvalid) as info:
        check_graph(load_plan(plan_file))
    problems = info.value.details["problems"]
    assert len(problems) == 2, problems
    text = "\n".join(str(p) for p in problems)
    assert "is a folder" in text and f"foreach: {tmp_path / 'media'}/*" in text
    assert "is a glob" in text and f"foreach: {tmp_path / 'media'}/*.wav" in text
