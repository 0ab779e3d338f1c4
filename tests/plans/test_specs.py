"""The fields of each task kind: validated per kind, readable errors, JSON-ready specs with absolute paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scribefleet.options import TranscribeOptions
from scribefleet.plans import SPECS, load_plan

ALL_KINDS = """\
tasks:
  - id: tr
    kind: transcribe
    input: media/talk.mp3
    out: out
    model: tiny.en
    language: auto
    formats: srt,txt
    resources: gpu
    timeout_s: 7200
    retries: 1
  - id: sh
    kind: shell
    needs: tr
    run: ls -l
    env: {A: b}
  - id: ag
    kind: aggregate
    needs: [tr]
    output: ~/index.md
  - id: ll
    kind: llm
    needs: [tr]
    input: out/talk.txt
    output: /abs/summary.md
    prompt: "Summarize:\\n{{ text }}"
    model: smollm2
    endpoint: http://127.0.0.1:8080/v1
    max_tokens: 200
    temperature: 0.3
"""


def test_each_kind_builds_its_spec(write, tmp_path: Path) -> None:
    plan = load_plan(write(ALL_KINDS))
    tr, sh, ag, ll = (plan.task(i) for i in ("tr", "sh", "ag", "ll"))
    assert (tr.kind, tr.resources, tr.timeout_s, tr.retries, tr.max_attempts(3)) == ("transcribe", "gpu", 7200.0, 1, 2)
    assert tr.spec == {
        "input": str(tmp_path / "media" / "talk.mp3"),
        "out": str(tmp_path / "out"),
        "options": {"model": "tiny.en", "language": None, "formats": ["srt", "txt"]},
    }
    assert TranscribeOptions(**tr.spec["options"]).formats == ("srt", "txt")
    assert sh.spec == {"run": "ls -l", "cwd": str(tmp_path), "env": {"A": "b"}} and sh.needs == ["tr"]
    assert (sh.resources, sh.timeout_s, sh.retries, sh.max_attempts(3)) == ("any", None, None, 3)
    assert ag.spec == {"output": str(Path.home() / "index.md"), "format": "md", "inputs": None, "title": None}
    assert ll.spec["prompt"] == "Summarize:\n{{text}}"  # placeholder spacing normalised
    assert (ll.spec["input"], ll.spec["output"]) == (str(tmp_path / "out" / "talk.txt"), "/abs/summary.md")
    assert (ll.spec["model"], ll.spec["max_tokens"], ll.spec["temperature"]) == ("smollm2", 200, 0.3)


def test_specs_are_json_and_validate_again_with_their_kind_model(write) -> None:
    plan = load_plan(write(ALL_KINDS))
    for task in plan.tasks:
        again = SPECS[task.kind].model_validate(json.loads(json.dumps(task.spec)))
        if task.kind != "transcribe":
            assert again.model_dump(mode="json") == task.spec
    transcribe = SPECS["transcribe"].model_validate(plan.task("tr").spec)
    assert transcribe.options == TranscribeOptions(model="tiny.en", formats=("srt", "txt"))
    assert transcribe.input == plan.task("tr").spec["input"]


def test_aggregate_inputs_are_made_absolute_and_format_can_be_explicit(write, tmp_path: Path) -> None:
    text = "tasks:\n  - {id: a, kind: aggregate, output: all.out, format: txt, inputs: [x.txt, /y.txt], title: All}\n"
    spec = load_plan(write(text)).task("a").spec
    assert spec == {"output": str(tmp_path / "all.out"), "format": "txt", "inputs": [str(tmp_path / "x.txt"), "/y.txt"], "title": "All"}


@pytest.mark.parametrize(
    ("task", "line", "message"),
    [
        ("{id: a, kind: shell, run: ls, runn: ls}", 2, "unknown field 'runn' (did you mean 'run'?)"),
        ("{id: a, kind: shell, run: ls, zzz: 1}", 2, "unknown field 'zzz' (a shell task takes: run, cwd, env)"),
        ("{id: a, kind: shell}", 2, "missing field 'run'"),
        ("{id: a, kind: shell, run: ''}", 2, "field 'run': String should have at least 1 character (got '')"),
        ("{id: a, kind: transcribe, input: x, out: y, formats: [docx]}", 2,
         "field 'formats': unknown format(s) docx; choose from srt, vtt, json, txt, tsv or all"),
        ("{id: a, kind: transcribe, input: x, out: y, beam_size: 99}", 2,
         "field 'beam_size': Input should be less than or equal to 20 (got 99)"),
        ("{id: a, kind: transcribe, input: x}", 2, "missing field 'out'"),
        ("{id: a, kind: aggregate, output: x.csv}", 2,
         "missing field 'format' (txt, json or md; or give 'output' one of those suffixes)"),
        ("{id: a, kind: aggregate, output: x.txt, format: html}", 2,
         "field 'format': Input should be 'txt', 'json' or 'md' (got 'html')"),
        ("{id: a, kind: llm, input: x, output: y, prompt: Summarize}", 2,
         "field 'prompt': the prompt must contain {{text}} where the input's text goes (got 'Summarize')"),
        ("{id: a, kind: llm, input: x, output: y, prompt: '{{text}}', temperature: 5}", 2,
         "field 'temperature': Input should be less than or equal to 2 (got 5)"),
        ("{id: a, kind: shell, run: ls, timeout_s: 0}", 2, "field 'timeout_s': Input should be greater than 0 (got 0)"),
        ("{id: a, kind: shell, run: ls, retries: -1}", 2, "field 'retries': Input should be greater than or equal to 0 (got -1)"),
        ("{id: a, kind: shell, run: ls, resources: tpu}", 2,
         "field 'resources': Input should be 'gpu', 'cpu' or 'any' (got 'tpu')"),
        ("{id: a, kind: shell, run: ls, need: [b]}", 2, "unknown field 'need' (did you mean 'needs'?)"),
        ("{id: a, kind: warp}", 2, "unknown kind 'warp' (choose transcribe, shell, aggregate or llm)"),
        ("{id: a}", 2, "missing 'kind' (choose transcribe, shell, aggregate or llm)"),
        ("{kind: shell, run: ls}", 2, "a task has no 'id' (ids use letters, digits, _ . -)"),
        ("{id: 'a:b', kind: shell, run: ls}", 2, "id 'a:b' is not valid (ids use letters, digits, _ . -)"),
    ],
)
def test_bad_fields_are_one_readable_problem(write, invalid, task: str, line: int, message: str) -> None:
    err = invalid(write(f"tasks:\n  - {task}\n"))
    assert [(p["line"], p["message"]) for p in err.details["problems"]] == [(line, message)]


def test_field_problems_point_at_the_key_line(write, invalid, problem_at) -> None:
    text = """\
    tasks:
      - id: t
        kind: transcribe
        input: a.wav
        out: o
        modle: tiny.en
    """
    assert problem_at(invalid(write(text)), 6) == {"line": 6, "task": "t", "message": "unknown field 'modle' (did you mean 'model'?)"}


def test_an_unknown_language_is_refused_when_the_plan_is_read(write, invalid) -> None:
    err = invalid(write("tasks:\n  - {id: a, kind: transcribe, input: x, out: y, language: xx}\n"))
    (problem,) = err.details["problems"]
    assert problem["line"] == 2 and problem["message"].startswith("field 'language': unknown language 'xx': ")
    assert "auto-per-window" in problem["message"]
    plan = load_plan(write("tasks:\n  - {id: a, kind: transcribe, input: x, out: y, language: German}\n"))
    assert plan.task("a").spec["options"]["language"] == "de"


def test_shell_env_names_and_values_the_os_refuses_are_plan_errors(write, invalid, problem_at) -> None:
    # they passed `plan check`, then the slot's Popen refused them: INTERNAL_ERROR "ValueError: illegal
    # environment variable name" / "embedded null byte"
    err = invalid(write('tasks:\n  - {id: a, kind: shell, run: "echo", env: {"A=B": 1, "9X": 2, OK_1: 3}}\n'
                        '  - {id: b, kind: shell, run: "echo", env: {X: "a\\u0000b"}}\n'
                        '  - {id: c, kind: shell, run: "echo a\\u0000b"}\n'))
    assert "'A=B', '9X' are not valid" in problem_at(err, 2)["message"]
    assert "NUL" in problem_at(err, 3)["message"] and "NUL" in problem_at(err, 4)["message"]


def test_a_url_input_in_capitals_stays_a_url(write) -> None:
    """A transcribe input `HTTPS://host/a.wav` was made a path under the plan's folder."""
    plan = load_plan(write("tasks:\n  - id: tr\n    kind: transcribe\n    input: HTTPS://media.example/a.wav\n    out: out\n"))
    assert plan.task("tr").spec["input"] == "HTTPS://media.example/a.wav"
