"""Reading plan files: YAML, Markdown with a fenced yaml block, and line numbers of the original file."""

from __future__ import annotations

from pathlib import Path

from scribefleet.errors import PlanInvalid
from scribefleet.plans import load_plan, parse_plan

MARKDOWN = """\
# Nightly batch

Some prose first, with an unrelated code block:

```python
print("not the plan")
```

## Plan

```yaml
vars:
  out: results
tasks:
  - id: hello
    kind: shell
    run: echo hello > ${out}/hello.txt
  - id: broken
    kind: teleport
```

More prose after the plan.
"""


def test_markdown_plan_reads_its_yaml_block(write) -> None:
    plan = load_plan(write(MARKDOWN.replace("    kind: teleport\n", "    kind: shell\n    run: 'true'\n"), "plan.md"))
    assert [t.id for t in plan.tasks] == ["hello", "broken"]
    assert plan.task("hello").spec["run"] == "echo hello > results/hello.txt"
    assert plan.task("hello").line == 15  # the line in plan.md, not in the block
    assert plan.name == "plan"  # no name: the file's stem


def test_markdown_errors_name_lines_of_the_markdown_file(write, invalid, problem_at) -> None:
    err = invalid(write(MARKDOWN, "plan.md"))
    assert problem_at(err, 19) == {"line": 19, "task": "broken", "message": "unknown kind 'teleport' (choose transcribe, shell, aggregate or llm)"}
    assert err.details["tasks"] == ["broken"] and err.details["lines"] == [19]
    assert "plan.md:19: task 'broken': unknown kind 'teleport'" in err.message
    assert err.code == "PLAN_INVALID" and err.http_status == 422


def test_markdown_yaml_syntax_error_line_is_in_the_markdown_file(write, invalid) -> None:
    text = "Intro\n\n```yml\ntasks:\n  - id: a\n    kind: shell\n    run: [unclosed\n```\n"
    err = invalid(write(text, "plan.md"))
    assert "not valid YAML" in err.message
    assert err.details["lines"] and 7 <= err.details["lines"][0] <= 8


def test_markdown_fence_may_be_tildes_and_indented(write) -> None:
    text = "Text\n\n  ~~~~yaml\n  tasks:\n    - id: a\n      kind: shell\n      run: echo a\n  ~~~~\n"
    plan = load_plan(write(text, "plan.markdown"))
    assert plan.task("a").spec["run"] == "echo a" and plan.task("a").line == 5


def test_markdown_with_several_yaml_blocks_uses_the_one_marked_plan(write) -> None:
    example = "```yaml\nnot: the plan\n```\n\n"
    real = "```yaml plan\ntasks:\n  - {id: real, kind: shell, run: echo}\n```\n"
    plan = load_plan(write(example + real, "plan.md"))
    assert [t.id for t in plan.tasks] == ["real"]


def test_markdown_with_several_unmarked_yaml_blocks_is_invalid(write, invalid) -> None:
    block = "```yaml\ntasks:\n  - {id: a, kind: shell, run: echo}\n```\n\n"
    err = invalid(write(block + block, "plan.md"))
    assert "2 ```yaml blocks (lines 1, 6)" in err.message and "```yaml plan" in err.message


def test_markdown_without_yaml_block_or_with_unclosed_block(write, invalid) -> None:
    assert "no ```yaml block" in invalid(write("# Just prose\n\n```sh\nls\n```\n", "a.md")).message
    err = invalid(write("# Plan\n\n```yaml\ntasks: []\n", "b.md"))
    assert err.details["lines"] == [3] and "never closed" in err.message


def test_yaml_syntax_error_names_its_line(write, invalid) -> None:
    err = invalid(write("tasks:\n  - id: a\n    kind: shell\n    run: \"unclosed\n  - id: b\n"))
    assert "not valid YAML" in err.message and err.details["lines"]


def test_unquoted_reference_in_a_flow_list_says_to_quote(write, invalid) -> None:
    err = invalid(write("vars: {a: x}\ntasks:\n  - id: t\n    kind: shell\n    foreach: [${a}, b]\n    run: echo\n"))
    assert err.details["lines"] == [5] and "quote values" in err.message


def test_duplicate_keys_are_reported_not_silently_overwritten(write, invalid, problem_at) -> None:
    err = invalid(write("tasks:\n  - id: a\n    kind: shell\n    run: echo one\n    run: echo two\n"))
    assert problem_at(err, 5)["message"] == "key 'run' appears twice (also line 4)"
    assert problem_at(err, 5)["task"] == "a"


def test_document_shape_errors(write, invalid) -> None:
    assert "a plan is a mapping" in invalid(write("- just\n- a list\n")).message
    assert "no 'tasks:' list" in invalid(write("name: empty\n")).message
    assert "non-empty list" in invalid(write("tasks: []\n")).message
    err = invalid(write("tasks:\n  - id: a\n    kind: shell\n    run: echo\n  - just a string\n"))
    assert err.details["lines"] == [5] and "a task must be a mapping" in err.message


def test_unknown_top_level_field_suggests_the_right_one(write, invalid, problem_at) -> None:
    err = invalid(write("name: x\ntask:\n  - {id: a, kind: shell, run: echo}\ntasks:\n  - {id: a, kind: shell, run: echo}\n"))
    assert problem_at(err, 2)["message"] == "unknown top-level field 'task' (did you mean 'tasks'?)"


def test_every_problem_is_reported_at_once(write, invalid) -> None:
    text = """\
    tasks:
      - id: a
        kind: shell
      - id: b
        kind: shell
        run: echo
        needs: [zzz]
      - id: c
        kind: nope
    """
    err = invalid(write(text))
    assert [(p["line"], p["task"]) for p in err.details["problems"]] == [(2, "a"), (7, "b"), (9, "c")]
    assert err.details["tasks"] == ["a", "b", "c"]
    assert "(3 problems)" in err.message


def test_missing_or_unreadable_file(tmp_path: Path, invalid) -> None:
    assert "not found" in invalid(tmp_path / "nope.yaml").message
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert "cannot read" in invalid(binary).message


def test_parse_plan_takes_text_and_a_nominal_source(tmp_path: Path) -> None:
    plan = parse_plan("tasks:\n  - {id: a, kind: shell, run: pwd}\n", tmp_path / "sub" / "named.yaml")
    assert plan.name == "named" and plan.base_dir == tmp_path / "sub"
    assert plan.task("a").spec["cwd"] == str(tmp_path / "sub")
    try:
        parse_plan("```yaml\ntasks: 3\n```\n", tmp_path / "x.md")
    except PlanInvalid as err:
        assert err.details["lines"] == [2]
    else:
        raise AssertionError("a plan whose tasks is a number loaded")


def test_markdown_block_scalar_problem_names_the_exact_line(write, invalid) -> None:
    text = "# Build\n\n```yaml\ntasks:\n  - id: b\n    kind: shell\n    run: |\n      cd $(mktemp -d)\n      make ${target}\n```\n"
    err = invalid(write(text, "plan.md"))
    assert err.details["problems"] == [{"line": 9, "task": "b", "message": "${target} in 'run' is not defined"}]
