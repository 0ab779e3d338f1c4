"""`scribefleet plan check|run` end to end: real CLI processes, real slots, real model and audio."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import TEXTS, exits_within, wer

CLI = [sys.executable, "-m", "scribefleet.cli.main"]


def run_cli(*args: str, check: int | None = 0, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def write_plan(folder: Path, text: str, name: str = "plan.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def await_fifo(path: Path, timeout_s: float = 120.0) -> str:
    """Block until a command writes to the FIFO at `path` (select, no polling)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)
        assert readable, f"nothing was written to {path} within {timeout_s} s"
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def store_of(state_dir: Path):
    from scribefleet.store.store import Store

    return Store.open(state_dir)


def test_check_prints_the_expanded_graph_with_vars(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, """
        vars: {who: nobody}
        tasks:
          - id: greet
            kind: shell
            foreach: [ann, bob]
            run: echo hello ${item} from ${who}
          - id: done
            kind: shell
            needs: [greet]
            run: echo done
    """)
    proc = run_cli("plan", "check", str(plan), "--var", "who=tester")
    assert "3 tasks (shell 3)" in proc.stdout
    assert "greet:ann" in proc.stdout and "$ echo hello bob from tester" in proc.stdout
    assert "needs greet:* (2)" in proc.stdout


def test_check_lists_every_problem_with_file_line_and_task(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, """
        name: broken
        tasks:
          - id: a
            kind: shel
          - id: b
            kind: shell
            needs: [nope]
            run: echo ${missing}
          - id: c
            kind: shell
            needs: [d]
            run: echo c
          - id: d
            kind: shell
            needs: [c]
            run: echo d
          - id: t
            kind: transcribe
            foreach: [x/a.wav, y/a.wav]
            input: ${item}
            out: o
          - id: agg
            kind: aggregate
            needs: [c]
            output: o/all.txt
    """)
    proc = run_cli("plan", "check", str(plan), check=1)
    assert "PLAN_INVALID" in proc.stderr and proc.stdout == ""
    for expected in (
        "plan.yaml:4: task 'a': unknown kind 'shel'",
        "plan.yaml:7: task 'b': needs 'nope'",
        "plan.yaml:8: task 'b': ${missing} in 'run' is not defined",
        "plan.yaml:11: task 'c': needs form a cycle: c -> d -> c",
        "plan.yaml:15: task 'd': needs form a cycle",
    ):
        assert expected in proc.stderr, proc.stderr
    # the whole-graph checks run once the file itself is valid
    plan.write_text(plan.read_text().replace("shel\n", "shell\n    run: echo a\n").replace("[nope]", "[a]")
                    .replace("${missing}", "b").replace("needs: [d]", "needs: [a]"))
    proc = run_cli("plan", "check", str(plan), check=1)
    assert "task 't:y/a.wav': writes " in proc.stderr and "which task 't:x/a.wav' writes too" in proc.stderr
    assert "task 'agg': has nothing to combine" in proc.stderr
    assert run_cli("plan", "check", str(plan), "--var", "novalue", check=2).returncode == 2


def test_foreach_transcribe_aggregate_then_shell_on_real_audio(tmp_path: Path, speech: dict[str, Path]) -> None:
    media = tmp_path / "media"
    media.mkdir()
    for name in ("en01.wav", "en02.wav", "en03.wav"):
        shutil.copy(speech[name], media / name)
    plan = write_plan(tmp_path, """
        vars: {out: results}
        tasks:
          - id: tr
            kind: transcribe
            foreach: media/*.wav
            input: ${item}
            out: ${out}/transcripts
            formats: [json, txt]
            retries: 0
          - id: index
            kind: aggregate
            needs: [tr]
            output: ${out}/index.json
          - id: digest
            kind: aggregate
            needs: [tr]
            output: ${out}/digest.md
            title: Three recordings
          - id: words
            kind: shell
            needs: [index, digest]
            run: grep -c '^## ' ${out}/digest.md > ${out}/sections.txt && echo counted
    """)
    summary = json.loads(run_cli("plan", "run", str(plan), "--json").stdout)
    assert (summary["total"], summary["complete"], summary["failed"]) == (6, 6, 0)
    out = tmp_path / "results"
    index = json.loads((out / "index.json").read_text())
    assert [i["name"] for i in index["items"]] == ["en01.wav", "en02.wav", "en03.wav"]
    for item in index["items"]:
        assert wer(TEXTS[item["name"]], item["text"]) <= 0.3, item
        assert item["language"] == "en" and item["duration_s"] > 1
        assert item["outputs"]["json"] == str(out / "transcripts" / item["name"].replace(".wav", ".json"))
    assert wer(" ".join(TEXTS[n] for n in ("en01.wav", "en02.wav", "en03.wav")), index["text"]) <= 0.3
    assert (out / "digest.md").read_text().startswith("# Three recordings\n\n## en01.wav\n")
    assert (out / "sections.txt").read_text().strip() == "3"
    # per-kind limits and attempts as stored
    state = tmp_path / ".scribefleet"
    tasks = {t.key: t for t in store_of(state).tasks(batch_id=summary["batch_id"])}
    assert (tasks["tr:en01"].timeout_s, tasks["tr:en01"].max_attempts) == (1800, 1)
    assert (tasks["index"].timeout_s, tasks["words"].timeout_s, tasks["words"].max_attempts) == (300, 1800, 3)
    assert tasks["tr:en02"].spec["work_dir"].startswith(str(state / "work"))
    # a re-run finds the same batch and runs nothing
    again = json.loads(run_cli("plan", "run", str(plan), "--json").stdout)
    assert again["batch_id"] == summary["batch_id"] and again["complete"] == 6
    dispatched = [e for e in store_of(state).events(batch_id=summary["batch_id"]) if e.type == "dispatched"]
    assert len(dispatched) == 6, "a finished task was run again"


def test_failures_cascade_refusals_and_timeouts_are_in_the_summary(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, """
        tasks:
          - id: broken
            kind: shell
            run: echo about to fail >&2; exit 3
          - id: after_broken
            kind: shell
            needs: [broken]
            run: touch after_broken.ran
          - id: last
            kind: shell
            needs: [after_broken]
            run: touch last.ran
          - id: sneaky
            kind: shell
            run: sudo ls /root
          - id: sleepy_default
            kind: shell
            retries: 0
            run: sleep 60
          - id: sleepy_own
            kind: shell
            retries: 0
            timeout_s: 1
            run: sleep 60
          - id: fine
            kind: shell
            run: echo fine
    """)
    proc = run_cli("plan", "run", str(plan), "--json", "--slots", "2", check=1,
                   env={"SCRIBEFLEET_SHELL_TIMEOUT_S": "2"})  # fmt: skip
    summary = json.loads(proc.stdout)
    jobs = {j["name"]: j for j in summary["jobs"]}
    assert (summary["complete"], summary["failed"]) == (1, 6)
    assert (jobs["broken"]["state"], jobs["broken"]["error_code"]) == ("failed", "SHELL_FAILED")
    assert "about to fail" in jobs["broken"]["error_message"]
    for key in ("after_broken", "last"):
        assert (jobs[key]["state"], jobs[key]["error_code"]) == ("skipped", "DEPENDENCY_FAILED")
        assert "'broken'" in jobs[key]["error_message"], jobs[key]
    assert (jobs["sneaky"]["state"], jobs["sneaky"]["error_code"]) == ("failed", "SHELL_COMMAND_NOT_ALLOWED")
    for key in ("sleepy_default", "sleepy_own"):
        assert (jobs[key]["error_code"], jobs[key]["attempts"]) == ("TASK_TIMEOUT", 1), jobs[key]
    tasks = {t.key: t for t in store_of(tmp_path / ".scribefleet").tasks(batch_id=summary["batch_id"])}
    assert (tasks["sleepy_default"].timeout_s, tasks["sleepy_own"].timeout_s) == (2, 1)
    assert jobs["fine"]["state"] == "complete"
    assert not (tmp_path / "after_broken.ran").exists() and not (tmp_path / "last.ran").exists()
    for code in ("SHELL_FAILED", "DEPENDENCY_FAILED", "SHELL_COMMAND_NOT_ALLOWED", "TASK_TIMEOUT"):
        assert code in proc.stderr, f"the failure table misses {code}"


@pytest.mark.slow
def test_a_plan_killed_mid_way_resumes_and_runs_each_task_once(tmp_path: Path, speech: dict[str, Path]) -> None:
    shutil.copy(speech["en04.wav"], tmp_path / "talk.wav")
    os.mkfifo(tmp_path / "gate.fifo")
    plan = write_plan(tmp_path, """
        tasks:
          - id: first
            kind: shell
            foreach: [a, b, c]
            run: echo ${item} >> first.txt
          - id: tr
            kind: transcribe
            input: talk.wav
            out: out
            formats: [txt]
          - id: gate
            kind: shell
            needs: [first, tr]
            run: echo $$$$ > gate.pid; test -e released || { echo up > gate.fifo; sleep 60; }
          - id: last
            kind: shell
            foreach: [a, b, c]
            needs: [gate]
            run: echo ${item} >> last.txt
    """)
    first_run = subprocess.Popen([*CLI, "plan", "run", str(plan)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        assert await_fifo(tmp_path / "gate.fifo") == "up\n"
    finally:
        os.killpg(first_run.pid, signal.SIGKILL)
        first_run.wait()
    gate_pid = int((tmp_path / "gate.pid").read_text())
    assert exits_within(gate_pid), "the killed run's command outlived it"
    state = tmp_path / ".scribefleet"
    half = {t.key: t.state.value for t in store_of(state).tasks()}
    assert half["gate"] == "running" and half["tr"] == "complete" and half["last:a"] == "queued", half

    (tmp_path / "released").touch()
    summary = json.loads(run_cli("plan", "run", str(plan), "--json").stdout)
    assert (summary["total"], summary["complete"]) == (8, 8)
    assert sorted((tmp_path / "first.txt").read_text().split()) == ["a", "b", "c"]
    assert sorted((tmp_path / "last.txt").read_text().split()) == ["a", "b", "c"]
    assert wer(TEXTS["en04.wav"], (tmp_path / "out" / "talk.txt").read_text()) <= 0.3
    store = store_of(state)
    assert {b.id for b in store.batches()} == {summary["batch_id"]}
    for task in store.tasks(batch_id=summary["batch_id"]):
        types = [e.type for e in store.events(task_id=task.id)]
        runs = types.count("dispatched")
        assert types.count("completed") == 1 and task.attempts == 1, (task.key, types)
        if task.key == "gate":  # the run that was killed, then the one that finished
            assert runs == 2 and "recovered" in types, types
        else:
            assert runs == 1, f"{task.key} ran {runs} times: {types}"


@pytest.mark.slow
def test_the_example_digest_plan_runs_on_the_cpu_against_a_chat_server(tmp_path: Path) -> None:
    """examples/plans/digest.yaml as shipped: transcribe -> llm per file -> index + digest -> tar."""
    import tarfile

    from llm_server import FakeChatServer

    plan = Path(__file__).parents[2] / "examples" / "plans" / "digest.yaml"
    out = tmp_path / "digest"
    server = FakeChatServer().start()  # an OpenAI-compatible HTTP server on loopback, with a fake model
    try:
        proc = run_cli("plan", "run", str(plan), "--var", f"out={out}", "--state", str(tmp_path / "state"),
                       "--device", "cpu", "--json", env={"SCRIBEFLEET_LLM_ENDPOINT": server.url})  # fmt: skip
    finally:
        server.stop()
    summary = json.loads(proc.stdout)
    assert (summary["total"], summary["complete"]) == (9, 9)
    assert "3 task(s) prefer a GPU but no GPU slot runs here" in proc.stderr
    index = json.loads((out / "index.json").read_text())
    assert [i["name"] for i in index["items"]] == ["fox.wav", "meeting.wav", "weather report.flac"]
    assert all(i["text"] and i["language"] == "en" for i in index["items"])
    chats = server.chats()
    assert len(chats) == 3
    fox_prompt = next(c.body["messages"][-1]["content"] for c in chats if '"fox.wav"' in c.body["messages"][-1]["content"])
    assert index["items"][0]["text"] in fox_prompt, "the llm did not get the transcript in place of {{text}}"
    digest = (out / "digest.md").read_text()
    assert digest.startswith("# Summaries of the sample recordings\n\n## fox.md\n\n") and "words:" in digest
    (archive,) = out.glob("digest-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"index.json", "digest.md", "summaries/fox.md", "transcripts/meeting.srt"} <= names


def test_a_rerun_redoes_what_changed_failed_or_lost_its_output_and_nothing_else(tmp_path: Path) -> None:
    text = """
        tasks:
          - id: make
            kind: shell
            run: echo v1 > a.txt
          - id: combine
            kind: aggregate
            needs: [make]
            inputs: [a.txt]
            output: combined.txt
          - id: flaky
            kind: shell
            run: test -e fixed
          - id: after
            kind: shell
            needs: [flaky]
            run: echo after >> after.txt
    """
    plan = write_plan(tmp_path, text)
    first = json.loads(run_cli("plan", "run", str(plan), "--json", check=1).stdout)
    assert {j["name"]: j["state"] for j in first["jobs"]} == {
        "make": "complete", "combine": "complete", "flaky": "failed", "after": "skipped"}  # fmt: skip

    def runs() -> dict[str, int]:
        store = store_of(tmp_path / ".scribefleet")
        keys = {t.id: t.key for t in store.tasks(batch_id=first["batch_id"])}
        counts = dict.fromkeys(keys.values(), 0)
        for event in store.events(batch_id=first["batch_id"]):
            if event.type == "dispatched":
                counts[keys[event.task_id]] += 1
        return counts

    (tmp_path / "fixed").touch()
    write_plan(tmp_path, text.replace("echo v1", "echo v2"))  # an edited command: same graph, same batch
    second = json.loads(run_cli("plan", "run", str(plan), "--json").stdout)
    assert second["batch_id"] == first["batch_id"] and second["complete"] == 4
    assert "== a.txt ==\n\nv2" in (tmp_path / "combined.txt").read_text(), "the step downstream was not redone"
    assert runs() == {"make": 2, "combine": 2, "flaky": 2, "after": 1}
    (tmp_path / "combined.txt").unlink()
    run_cli("plan", "run", str(plan))
    assert runs() == {"make": 2, "combine": 3, "flaky": 2, "after": 1}, "only the task whose output was lost reruns"
    write_plan(tmp_path, text.replace("echo v1", "echo v2").replace("run: test -e fixed", "run: test -e fixed\n            timeout_s: 5"))
    third = json.loads(run_cli("plan", "run", str(plan), "--json").stdout)
    assert third["batch_id"] != first["batch_id"], "a changed limit is a changed graph: a new batch"
    assert (tmp_path / "after.txt").read_text() == "after\nafter\n"


def test_a_model_nobody_has_fails_its_tasks_and_the_rest_of_the_plan_runs(tmp_path: Path, speech: dict[str, Path]) -> None:
    # one task's unknown model stopped `plan run` before anything ran (MODEL_NOT_FOUND, exit 1, nothing done)
    shutil.copy(speech["en01.wav"], tmp_path / "talk.wav")
    plan = write_plan(tmp_path, """
        tasks:
          - {id: odd, kind: transcribe, input: talk.wav, out: out, formats: txt, model: no-such-model}
          - {id: index, kind: aggregate, needs: odd, output: out/index.txt}
          - {id: other, kind: shell, run: echo other > other.txt}
    """)
    proc = run_cli("plan", "run", str(plan), "--json", check=1, env={"HF_HUB_OFFLINE": "1"})
    jobs = {j["name"]: j for j in json.loads(proc.stdout)["jobs"]}
    assert (jobs["odd"]["state"], jobs["odd"]["error_code"], jobs["odd"]["attempts"]) == ("failed", "MODEL_NOT_FOUND", 0)
    assert (jobs["index"]["state"], jobs["index"]["error_code"]) == ("skipped", "DEPENDENCY_FAILED")
    assert jobs["other"]["state"] == "complete" and (tmp_path / "other.txt").read_text() == "other\n"
    assert "no model called 'no-such-model'" in jobs["odd"]["error_message"]


def test_the_summary_line_tells_failed_from_skipped(tmp_path: Path) -> None:
    # "2/5 tasks done, 3 failed" when one command failed and two tasks were only skipped after it
    plan = write_plan(tmp_path, """
        tasks:
          - {id: bad, kind: shell, run: exit 3}
          - {id: next, kind: shell, needs: bad, run: echo next}
          - {id: last, kind: shell, needs: next, run: echo last}
          - {id: fine, kind: shell, run: echo fine}
          - {id: also, kind: shell, run: echo also}
    """)
    proc = run_cli("plan", "run", str(plan), "--json", check=1)
    assert f"plan plan: 2/5 tasks done, 1 failed, 2 skipped. State: {tmp_path / '.scribefleet'}" in proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["complete"], summary["failed"]) == (2, 3), "the JSON's 'failed' still counts every task not done"


def test_a_file_added_to_a_foreach_folder_runs_its_own_tasks_and_what_combines_them_only(tmp_path: Path) -> None:
    # a new file changes the graph, so the plan gets a new batch: every shell task of the old files ran again
    # (the docs promise a resumed plan finds its finished tasks; llm tasks and appending commands paid twice)
    media = tmp_path / "media"
    media.mkdir()
    for name in ("a", "b"):
        (media / f"{name}.txt").write_text(name)
    plan = write_plan(tmp_path, """
        tasks:
          - id: upper
            kind: shell
            foreach: media/*.txt
            run: tr a-z A-Z < ${item} > ${item.stem}.up; echo ${item.stem} >> runs.log
          - id: slow
            kind: shell
            timeout_s: 60
            run: echo slow >> runs.log
          - id: index
            kind: shell
            needs: [upper]
            run: cat *.up > index.txt; echo index >> runs.log
    """)
    first = json.loads(run_cli("plan", "run", str(plan), "--json").stdout)
    (media / "c.txt").write_text("c")
    second = json.loads(run_cli("plan", "run", str(plan), "--json").stdout)
    assert second["batch_id"] != first["batch_id"] and second["complete"] == 5
    assert sorted((tmp_path / "runs.log").read_text().split()) == ["a", "b", "c", "index", "index", "slow"]
    assert (tmp_path / "index.txt").read_text() == "ABC"
    carried = {j["name"]: j["attempts"] for j in second["jobs"]}
    assert carried == {"upper:a": 0, "upper:b": 0, "upper:c": 1, "slow": 0, "index": 1}
    third = json.loads(run_cli("plan", "run", str(plan), "--json").stdout)
    assert third["batch_id"] == second["batch_id"]
    assert len((tmp_path / "runs.log").read_text().split()) == 6, "a rerun with nothing changed ran something"


@pytest.mark.gpu
def test_gpu_tasks_run_on_a_pinned_gpu_slot_under_device_cuda(tmp_path: Path, speech: dict[str, Path]) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    if ctranslate2.get_cuda_device_count() == 0:
        pytest.skip("no CUDA GPU on this machine")
    shutil.copy(speech["en05.wav"], tmp_path / "a.wav")
    plan = write_plan(tmp_path, """
        tasks:
          - id: tr
            kind: transcribe
            input: a.wav
            out: out
            formats: [txt]
            resources: gpu
          - id: where
            kind: shell
            needs: [tr]
            resources: gpu
            run: echo "visible=$CUDA_VISIBLE_DEVICES" > where.txt
    """)
    summary = json.loads(run_cli("plan", "run", str(plan), "--device", "cuda", "--slots", "1", "--json").stdout)
    assert summary["complete"] == 2
    tasks = {t.key: t for t in store_of(tmp_path / ".scribefleet").tasks(batch_id=summary["batch_id"])}
    assert tasks["tr"].slot == tasks["where"].slot == "gpu0" and tasks["tr"].resources == "gpu"
    assert (tmp_path / "where.txt").read_text().strip() not in ("visible=", "")  # pinned before the slot started
    assert wer(TEXTS["en05.wav"], (tmp_path / "out" / "a.txt").read_text()) <= 0.3


def test_an_aggregate_of_diarized_transcripts_keeps_who_spoke(tmp_path: Path, speech: dict[str, Path]) -> None:
    pytest.importorskip("resemblyzer", reason="the diarization extra is not installed")
    from helpers import DATA

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(DATA / "dialogue.flac", media / "dialogue.flac")
    shutil.copy(speech["en01.wav"], media / "en01.wav")
    plan = write_plan(tmp_path, """
        tasks:
          - id: tr
            kind: transcribe
            foreach: media/*
            input: ${item}
            out: results/transcripts
            formats: [json, vtt]
            diarize: true
            max_speakers: 2
            retries: 0
          - {id: index, kind: aggregate, needs: [tr], output: results/index.json}
          - {id: digest, kind: aggregate, needs: [tr], output: results/digest.txt, title: Who said what}
          - {id: subtitles, kind: aggregate, inputs: [results/transcripts/dialogue.vtt], needs: [tr], output: results/vtt.json}
    """)
    summary = json.loads(run_cli("plan", "run", str(plan), "--json", timeout=900).stdout)
    assert (summary["complete"], summary["failed"]) == (5, 0), summary
    out = tmp_path / "results"
    index = {i["name"]: i for i in json.loads((out / "index.json").read_text())["items"]}
    dialogue = json.loads((out / "transcripts" / "dialogue.json").read_text())
    assert dialogue["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    item = index["dialogue.flac"]
    assert item["speakers"] == dialogue["speakers"]
    lines = item["text"].splitlines()
    assert len(lines) >= 2 and all(line.startswith(("[SPEAKER_00] ", "[SPEAKER_01] ")) for line in lines)
    # each line is one turn: consecutive segments of a speaker, in the transcript's order
    turns = []
    for seg in dialogue["segments"]:
        if turns and turns[-1][0] == seg["speaker"]:
            turns[-1][1].append(seg["text"].strip())
        else:
            turns.append((seg["speaker"], [seg["text"].strip()]))
    assert lines == [f"[{who}] " + " ".join(texts) for who, texts in turns]
    assert index["en01.wav"]["speakers"] == ["SPEAKER_00"]
    digest = (out / "digest.txt").read_text()
    assert "== dialogue.flac ==\n\n" + item["text"] in digest and "[SPEAKER_01] " in digest
    # the task's limit leaves room for the diarize stage's own limit
    tasks = {t.key: t for t in store_of(tmp_path / ".scribefleet").tasks(batch_id=summary["batch_id"])}
    assert tasks["tr:dialogue"].timeout_s == 1800 + 1800
    (from_vtt,) = json.loads((out / "vtt.json").read_text())["items"]
    assert from_vtt["text"] == item["text"] and from_vtt["speakers"] == item["speakers"]


def test_a_state_folder_that_cannot_be_made_is_an_error_not_a_traceback(tmp_path: Path, speech: dict[str, Path]) -> None:
    # 'plan run --state', 'transcribe --out' and 'batch --state' under a file (or a read-only mount, a missing
    # mount point) ended in a raw FileNotFoundError/NotADirectoryError traceback
    (tmp_path / "a-file").write_text("")
    (tmp_path / "media").mkdir()
    shutil.copy(speech["en01.wav"], tmp_path / "media" / "talk.wav")
    plan = write_plan(tmp_path, """
        tasks:
          - {id: hello, kind: shell, run: echo hello}
    """)
    under_a_file = str(tmp_path / "a-file" / "state")
    for args in (("plan", "run", str(plan), "--state", under_a_file),
                 ("transcribe", str(speech["en01.wav"]), "--out", under_a_file),
                 ("batch", "--input", str(tmp_path / "media"), "--controller", "http://127.0.0.1:9", "--state",
                  f"{under_a_file}/batch_state.json")):  # fmt: skip
        proc = run_cli(*args, check=1)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "error [OUTPUT_WRITE_FAILED]: could not create the folder" in proc.stderr and "a-file" in proc.stderr, proc.stderr
