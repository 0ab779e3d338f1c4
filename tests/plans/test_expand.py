"""foreach expansion, needs (fan-out, fan-in, item by item), graph errors, order and rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scribefleet.plans import Plan, load_plan
from scribefleet.plans.expand import find_cycles, item_keys

PIPELINE = """\
vars: {out: out}
tasks:
  - id: prepare
    kind: shell
    run: mkdir -p ${out}
  - id: transcribe
    kind: transcribe
    foreach: media/*.*[!t]
    needs: [prepare]
    input: ${item}
    out: ${out}
  - id: summary
    kind: llm
    foreach: media/*.*[!t]
    needs: [transcribe]
    input: ${out}/${item.stem}.txt
    output: ${out}/${item.stem}.summary.md
    prompt: "{{text}}"
  - id: index
    kind: aggregate
    needs: [transcribe]
    output: ${out}/index.json
  - id: first
    kind: shell
    needs: ["summary:intro"]
    run: echo first
  - id: all
    kind: shell
    foreach: [x, y]
    needs: ["summary:*", index]
    run: echo ${item}
"""


def test_glob_expands_sorted_into_one_task_per_file(write, media: Path, tmp_path: Path) -> None:
    plan = load_plan(write(PIPELINE))
    group = plan.group("transcribe")
    assert [t.id for t in group] == ["transcribe:intro", "transcribe:q-and-a", "transcribe:talk"]  # notes.txt excluded
    assert [t.item for t in group] == ["media/intro.wav", "media/q-and-a.flac", "media/talk.mp3"]
    assert group[2].spec["input"] == str(media / "talk.mp3") and group[2].group == "transcribe"
    assert plan.task("summary:talk").spec["output"] == str(tmp_path / "out" / "talk.summary.md")


def test_needs_fan_out_fan_in_item_by_item_and_explicit(write, media: Path) -> None:
    plan = load_plan(write(PIPELINE))
    every_transcribe = ["transcribe:intro", "transcribe:q-and-a", "transcribe:talk"]
    assert all(t.needs == ["prepare"] for t in plan.group("transcribe"))  # fan-out
    assert plan.task("summary:q-and-a").needs == ["transcribe:q-and-a"]  # item by item
    assert plan.task("index").needs == every_transcribe  # fan-in
    assert plan.task("first").needs == ["summary:intro"]  # one named expansion
    assert plan.task("all:y").needs == ["summary:intro", "summary:q-and-a", "summary:talk", "index"]


def test_tasks_come_after_their_needs_whatever_the_file_order(write) -> None:
    text = """\
    tasks:
      - {id: c, kind: shell, run: c, needs: [b]}
      - {id: b, kind: shell, run: b, needs: [a]}
      - {id: z, kind: shell, run: z}
      - {id: a, kind: shell, run: a}
    """
    assert [t.id for t in load_plan(write(text)).tasks] == ["z", "a", "b", "c"]


def test_list_foreach_with_item_fields_and_numbers(write) -> None:
    text = """\
    tasks:
      - id: enc
        kind: shell
        foreach: [clips/a.mp4, "/abs/b.mkv", 3]
        run: echo ${item} ${item.name} ${item.stem} ${item.parent} ${item.suffix}
    """
    runs = [t.spec["run"] for t in load_plan(write(text)).tasks]
    assert runs == ["echo clips/a.mp4 a.mp4 a clips .mp4", "echo /abs/b.mkv b.mkv b /abs .mkv", "echo 3 3 3 . "]
    assert [t.id for t in load_plan(write(text)).tasks] == ["enc:a", "enc:b", "enc:3"]


def test_items_sharing_a_stem_keep_their_whole_name(write, tmp_path: Path) -> None:
    for rel in ("a/talk.wav", "b/talk.wav", "b/solo.wav"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    text = "tasks:\n  - {id: t, kind: transcribe, foreach: '**/*.wav', input: '${item}', out: o}\n"
    assert [t.id for t in load_plan(write(text)).tasks] == ["t:a/talk.wav", "t:solo", "t:b/talk.wav"]
    assert item_keys(["1.5", "1.6", "x"]) == ["1.5", "1.6", "x"]


def test_absolute_glob_gives_absolute_items(write, media: Path) -> None:
    text = f"tasks:\n  - {{id: t, kind: shell, foreach: '{media}/*.wav', run: 'cat ${{item}}'}}\n"
    assert load_plan(write(text)).task("t:intro").spec["run"] == f"cat {media}/intro.wav"


def test_foreach_glob_matching_nothing(write, invalid, problem_at) -> None:
    text = """\
    tasks:
      - id: t
        kind: shell
        foreach: nothing/*.wav
        run: echo ${item}
      - id: after
        kind: shell
        needs: [t]
        run: echo done
    """
    err = invalid(write(text))
    assert problem_at(err, 4)["task"] == "t"
    assert "foreach glob 'nothing/*.wav' matched nothing in" in problem_at(err, 4)["message"]
    assert "allow_empty: true" in problem_at(err, 4)["message"]
    plan = load_plan(write(text.replace("foreach: nothing", "allow_empty: true\n        foreach: nothing")))
    assert [t.id for t in plan.tasks] == ["after"] and plan.task("after").needs == []


def test_duplicate_items_and_empty_list(write, invalid) -> None:
    err = invalid(write("tasks:\n  - {id: t, kind: shell, foreach: [a, a], run: x}\n"))
    assert err.details["problems"] == [{"line": 2, "task": "t", "message": "foreach item 'a' is listed twice or empty"}]
    assert "foreach list is empty" in invalid(write("tasks:\n  - {id: t, kind: shell, foreach: [], run: x}\n")).message


def test_unknown_need_duplicate_id_and_bad_expansion_names(write, invalid, problem_at, media: Path) -> None:
    text = """\
    tasks:
      - {id: transcribe, kind: transcribe, foreach: 'media/*.wav', input: '${item}', out: o}
      - {id: index, kind: aggregate, output: i.json, needs: [transcibe]}
      - {id: index, kind: shell, run: echo}
      - {id: one, kind: shell, run: echo, needs: ["transcribe:nope", "index:x"]}
      - {id: per, kind: shell, foreach: [intro, talk], run: echo, needs: [transcribe]}
    """
    err = invalid(write(text))
    assert problem_at(err, 3)["message"] == "needs 'transcibe', which is no task of this plan (did you mean 'transcribe'?)"
    assert problem_at(err, 4)["message"] == "duplicate task id 'index' (first declared on line 3)"
    five = sorted(p["message"] for p in err.details["problems"] if p["line"] == 5)
    assert five == ["needs 'index:x', but 'index' has no foreach; write 'index'",
                    "needs 'transcribe:nope', but 'transcribe' has no item 'nope' (its items: intro)"]
    assert problem_at(err, 6) == {
        "line": 6, "task": "per:talk",
        "message": "needs 'transcribe' item by item, but 'transcribe' has no item 'talk'; write 'transcribe:*' to need all of its tasks",
    }


def test_cycles_name_their_tasks(write, invalid) -> None:
    text = """\
    tasks:
      - {id: a, kind: shell, run: a, needs: [c]}
      - {id: b, kind: shell, run: b, needs: [a]}
      - {id: c, kind: shell, run: c, needs: [b]}
      - {id: ok, kind: shell, run: ok, needs: [a]}
      - {id: self, kind: shell, run: s, needs: [self]}
    """
    err = invalid(write(text))
    by_task = {p["task"]: p["message"] for p in err.details["problems"]}
    assert by_task == {
        "a": "needs form a cycle: a -> c -> b -> a",
        "b": "needs form a cycle: a -> c -> b -> a",
        "c": "needs form a cycle: a -> c -> b -> a",
        "self": "needs form a cycle: self -> self",
    }
    assert err.details["tasks"] == ["a", "b", "c", "self"] and err.details["lines"] == [2, 3, 4, 6]


def test_find_cycles_reports_each_tangle_once() -> None:
    graph = {"a": ["b"], "b": ["a", "c"], "c": ["d"], "d": ["c"], "e": ["a"]}
    assert find_cycles(graph) == [["a", "b", "a"], ["c", "d", "c"]]
    assert find_cycles({"a": [], "b": ["a"]}) == []


def test_graph_lines_and_to_dict(write, media: Path) -> None:
    plan = load_plan(write(PIPELINE))
    text = plan.render()
    lines = plan.graph_lines()
    assert lines[0] == f"plan 'plan' ({plan.source}): 11 tasks (shell 4, transcribe 3, llm 3, aggregate 1)"
    assert lines[1] == "vars: out=out"
    assert any(line.startswith("transcribe:talk ") and "media/talk.mp3 -> out/ (default formats)" in line for line in lines)
    assert "    needs transcribe:* (3)" in text  # fan-in shown compactly
    assert "    needs summary:* (3), index" in text
    assert "    needs transcribe:q-and-a" in text
    data = json.loads(json.dumps(plan.to_dict()))
    assert Plan.model_validate(data) == plan
    assert data["tasks"][0] == {
        "id": "prepare", "kind": "shell", "needs": [], "timeout_s": None, "retries": None, "resources": "any",
        "spec": {"run": "mkdir -p out", "cwd": str(plan.base_dir), "env": {}},
        "group": "prepare", "item": None, "line": 3,
    }


def test_a_url_input_is_shown_as_it_is(write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # run from the plan's folder, the graph showed 'http:/127.0.0.1:8765/a.wav -> out/': the URL was read as a
    # path relative to the current folder and its '//' folded
    monkeypatch.chdir(tmp_path)
    plan = load_plan(write("""
        tasks:
          - {id: talk, kind: transcribe, input: "http://127.0.0.1:8765/a.wav", out: out, formats: txt}
        """))
    assert any(line.startswith("talk ") and "http://127.0.0.1:8765/a.wav -> out/ (txt)" in line for line in plan.graph_lines())
