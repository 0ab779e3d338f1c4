"""${name} substitution: what is ours, what is left for bash, overrides, and undefined names."""

from __future__ import annotations

from scribefleet.plans import load_plan
from scribefleet.plans.variables import resolve_vars, substitute


def test_substitute_replaces_only_our_references() -> None:
    scope = {"out": "/data/out", "item": "media/talk.mp3"}
    text, undefined = substitute("${out}/${item.stem}.txt <- ${item.name} in ${item.parent} (${item.suffix})", scope)
    assert text == "/data/out/talk.txt <- talk.mp3 in media (.mp3)" and undefined == []


def test_bash_forms_and_escapes_are_left_alone() -> None:
    text, undefined = substitute("echo $HOME $(date) ${VAR:-x} ${#VAR} $$${out} $${out} $$$$", {"out": "o"})
    assert text == "echo $HOME $(date) ${VAR:-x} ${#VAR} $o ${out} $$"
    assert undefined == []


def test_undefined_names_are_reported_with_their_offset() -> None:
    text, undefined = substitute("a ${missing} b ${item} ${out.colour}", {"out": "x"})
    assert text == "a ${missing} b ${item} ${out.colour}"
    assert [(u.name, u.offset) for u in undefined] == [("missing", 2), ("item", 15), ("out.colour", 23)]
    assert undefined[1].reason == "is only defined inside a foreach task"
    assert undefined[2].reason.startswith("has no attribute")


def test_capitalised_names_go_to_bash_only_in_shell_fields() -> None:
    assert substitute("${HOME}/x", {}, bash_names=True) == ("${HOME}/x", [])
    text, undefined = substitute("${HOME}/x ${lower}", {}, bash_names=True)
    assert [u.name for u in undefined] == ["lower"]
    assert [u.name for u in substitute("${HOME}", {})[1]] == ["HOME"]
    assert substitute("${HOME}", {"HOME": "/plan/home"}, bash_names=True)[0] == "/plan/home"  # declared wins


def test_vars_may_use_each_other_in_any_order_and_overrides_win() -> None:
    problems: list[tuple[str, str]] = []
    declared = {"report": "${out}/report.md", "out": "${root}/out", "root": "/srv", "n": 3, "flag": True}
    values = resolve_vars(declared, {"root": "/tmp/${x}"}, lambda n, m: problems.append((n, m)))
    assert values == {"root": "/tmp/${x}", "report": "/tmp/${x}/out/report.md", "out": "/tmp/${x}/out", "n": "3", "flag": "true"}
    assert problems == []


def test_var_problems_cycle_reserved_name_and_non_scalar() -> None:
    problems: list[tuple[str, str]] = []
    resolve_vars({"a": "${b}", "b": "${a}", "item": "x", "lst": [1], "c": "${nope}"}, {"bad-name": "1"}, lambda n, m: problems.append((n, m)))
    messages = dict(problems)
    assert messages["a"] == "variables refer to each other in a cycle: a -> b -> a"
    assert "b" not in messages  # one cycle, reported once
    assert "cannot be a variable name" in messages["item"] and "cannot be a variable name" in messages["bad-name"]
    assert messages["lst"] == "variable 'lst' must be a string or a number, not a list"
    assert messages["c"] == "variable 'c' uses ${nope}, which is not defined"


PLAN = """\
vars:
  out: results
  lang: en
tasks:
  - id: t
    kind: transcribe
    input: talks/${name}.wav
    out: ${out}/${lang}
    language: ${lang}
"""


def test_overrides_reach_task_fields_and_may_add_vars(write, tmp_path) -> None:
    plan = load_plan(write(PLAN), overrides={"lang": "de", "name": "keynote"})
    task = plan.task("t")
    assert task.spec["input"] == str(tmp_path / "talks" / "keynote.wav")
    assert task.spec["out"] == str(tmp_path / "results" / "de")
    assert task.spec["options"] == {"language": "de"}
    assert plan.vars == {"lang": "de", "name": "keynote", "out": "results"}


def test_undefined_variable_names_task_and_line(write, invalid, problem_at) -> None:
    err = invalid(write(PLAN))
    assert problem_at(err, 7) == {"line": 7, "task": "t", "message": "${name} in 'input' is not defined"}


def test_undefined_variable_in_a_block_scalar_names_its_own_line(write, invalid, problem_at) -> None:
    text = """\
    tasks:
      - id: build
        kind: shell
        run: |
          export LD_LIBRARY_PATH="$HOME/lib:${LD_LIBRARY_PATH}"
          cd $(mktemp -d)
          make ${target}
    """
    err = invalid(write(text))
    assert problem_at(err, 7)["message"] == "${target} in 'run' is not defined"
    assert err.details["lines"] == [7]  # LD_LIBRARY_PATH and HOME were left for bash


def test_item_outside_foreach_and_llm_placeholder_hint(write, invalid, problem_at) -> None:
    text = """\
    tasks:
      - id: t
        kind: shell
        run: echo ${item}
      - id: l
        kind: llm
        input: a.txt
        output: b.txt
        prompt: "Summarize: ${text}"
    """
    err = invalid(write(text))
    assert problem_at(err, 4)["message"] == "${item} in 'run' is only defined inside a foreach task"
    messages = [p["message"] for p in err.details["problems"] if p["line"] == 9]
    assert "${text} in 'prompt' is not defined (the prompt's placeholder for the input's text is {{text}})" in messages


def test_bad_override_name_and_var_lines(write, invalid, problem_at) -> None:
    err = invalid(write("vars:\n  a: x\n  b: ${zz}\ntasks:\n  - {id: t, kind: shell, run: echo}\n"), overrides={"2x": "y"})
    assert problem_at(err, 3)["message"] == "variable 'b' uses ${zz}, which is not defined"
    assert any("--var 2x=...: '2x' cannot be a variable name" == p["message"] for p in err.details["problems"])


def test_substitution_reaches_numbers_lists_and_env(write) -> None:
    text = """\
    vars: {t: 90, fmt: srt, home: /opt/x}
    tasks:
      - id: s
        kind: shell
        run: run.sh
        timeout_s: ${t}
        retries: "${t}"
        env: {TOOL_HOME: "${home}", THREADS: 4, DEBUG: true}
      - id: tr
        kind: transcribe
        input: a.wav
        out: o
        formats: [txt, "${fmt}"]
    """
    plan = load_plan(write(text))
    assert plan.task("s").timeout_s == 90.0 and plan.task("s").retries == 90
    assert plan.task("s").spec["env"] == {"TOOL_HOME": "/opt/x", "THREADS": "4", "DEBUG": "true"}
    assert plan.task("tr").spec["options"]["formats"] == ["txt", "srt"]


NASTY_NAMES = ["talk 1", "it's", "$(touch PWNED)", "${out}", 'say "hi"', "back\\slash", "`touch PWNED`"]


def test_foreach_items_in_a_shell_run_are_literal_words_bare_or_quoted(write, tmp_path) -> None:
    # file names went into `run` as bash code: 'talk 1.wav' split in two, "it's.wav" failed to parse, and a file
    # named '$(touch PWNED).wav' ran touch
    import subprocess

    media = tmp_path / "media"
    media.mkdir()
    for name in NASTY_NAMES:
        (media / f"{name}.wav").write_bytes(b"")
    plan = load_plan(write("""
        vars: {out: out, flags: -n -e}
        tasks:
          - id: names
            kind: shell
            foreach: media/*.wav
            run: |
              test -f ${item} && test -f "${item}"
              printf '%s|' ${item.stem} "${item.name}" '${item.stem}' "<'${item.suffix}'>"; echo ${flags} x
        """))
    seen = []
    for task in plan.tasks:
        done = subprocess.run(["bash", "-c", task.spec["run"]], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (task.spec["run"], done.stderr)
        seen.append(done.stdout)
    # `${flags}` is the plan's own variable, inserted as written: two options for echo (-n: no newline)
    assert sorted(seen) == sorted(f"{n}|{n}.wav|{n}|<'.wav'>|x" for n in NASTY_NAMES)
    assert not (tmp_path / "PWNED").exists()
