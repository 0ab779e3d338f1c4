"""The llm kind against real HTTP servers: a fake model on loopback, a real slot and dispatcher, llama.cpp.

The fake server (tests/llm_server.py) answers "<n> words: <first five words>"
of the user message, so every answer here is exact; the llama.cpp test at the
end checks shape only, since a small model's words are not predictable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_server import FAKE_MODEL, FakeChatServer, LlamaServer, fake_answer, free_port, llama_unavailable, smollm2_gguf
from scribefleet.config import Settings
from scribefleet.errors import InputNotFound, LlmFailed, LlmUnreachable, ScribefleetError, UsageError
from scribefleet.worker.kinds import KINDS, TaskContext
from scribefleet.worker.llm import chat_url, cut_text, fill_prompt, read_input, run_llm, shown_url

SECRET = "sk-test-0123456789abcdef"
TRANSCRIPT = {
    "text": " The quarterly review covers revenue, hiring and the new office in Lisbon.",
    "segments": [{"id": 0, "start": 0.0, "end": 4.2, "text": " The quarterly review covers revenue,"}],
    "language": "en",
}


@pytest.fixture
def fake() -> Iterator[FakeChatServer]:
    server = FakeChatServer().start()
    yield server
    server.stop()


def make_ctx(tmp_path: Path, settings: Settings, slot_name: str = "cpu0") -> TaskContext:
    progress: list[tuple[str, float]] = []
    return TaskContext(
        task_id="t1", slot_name=slot_name, device="cpu", cpu_threads=1, log_path=tmp_path / "logs" / "t1.log",
        settings=settings, progress=lambda stage, fraction, extra=None: progress.append((stage, fraction)),
    )  # fmt: skip


def spec_for(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    source = tmp_path / "talk.json"
    if not source.exists():
        source.write_text(json.dumps(TRANSCRIPT))
    return {"prompt": "Summarize {{name}}: {{text}}", "input": str(source), "output": str(tmp_path / "out" / "talk.summary.txt"), **extra}


def test_a_whisper_transcript_fills_the_prompt_and_the_answer_is_written(
    tmp_path: Path, settings: Settings, fake: FakeChatServer
) -> None:
    settings.llm_endpoint = fake.url
    spec = spec_for(tmp_path, system="You are terse.", max_tokens=40, temperature=0.0)
    result = KINDS["llm"](spec, make_ctx(tmp_path, settings))
    user = "Summarize talk.json: " + TRANSCRIPT["text"].strip()
    [chat] = fake.chats()
    assert chat.body == {
        "model": FAKE_MODEL,  # none named anywhere: the first model the endpoint lists
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": user}],
        "max_tokens": 40, "temperature": 0.0,
    }  # fmt: skip
    out = tmp_path / "out" / "talk.summary.txt"
    assert out.read_text() == fake_answer(user) + "\n"
    assert result["output"] == str(out) and result["model"] == FAKE_MODEL and result["warnings"] == []
    assert result["usage"] == {"prompt_tokens": 14, "completion_tokens": 7, "total_tokens": 21}
    assert result["elapsed_s"] >= 0 and result["endpoint"] == fake.url + "/v1/chat/completions"
    assert sorted(p.name for p in out.parent.iterdir()) == ["talk.summary.txt"]  # no temp file left behind
    assert "answer: " in (tmp_path / "logs" / "t1.log").read_text()


def test_text_files_segment_only_json_and_other_json_are_read_as_text(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("plain words\n")
    (tmp_path / "b.json").write_text(json.dumps({"segments": [{"text": " one"}, {"text": " two "}]}))
    (tmp_path / "c.json").write_text('["not", "a transcript"]')
    (tmp_path / "d.json").write_text("{broken")
    assert read_input(tmp_path / "a.txt") == "plain words\n"
    assert read_input(tmp_path / "b.json") == "one two"
    assert read_input(tmp_path / "c.json") == '["not", "a transcript"]'
    assert read_input(tmp_path / "d.json") == "{broken"
    with pytest.raises(InputNotFound):
        read_input(tmp_path / "missing.json")
    # one pass: a transcript that says "{{name}}" is not filled in again
    assert fill_prompt("{{ name }} -> {{text}}", "say {{name}}", "x.txt") == "x.txt -> say {{name}}"


def test_a_txt_input_and_a_long_input_cut_with_a_warning(tmp_path: Path, settings: Settings, fake: FakeChatServer) -> None:
    settings.llm_endpoint, settings.llm_max_input_chars = fake.url, 40
    notes = tmp_path / "notes.txt"
    notes.write_text("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu")
    spec = {"prompt": "{{text}}", "input": str(notes), "output": str(tmp_path / "notes.out"), "model": "m1"}
    result = run_llm(spec, make_ctx(tmp_path, settings))
    sent = fake.chats()[0].body["messages"][-1]["content"]
    assert sent == "alpha beta gamma delta epsilon zeta eta"  # cut at a word break, within 40 characters
    assert fake.chats()[0].body["model"] == "m1" and [r.method for r in fake.requests] == ["POST"]
    assert result["warnings"] == [
        "input cut from 66 to 39 characters (SCRIBEFLEET_LLM_MAX_INPUT_CHARS=40); the model saw only the start of it"
    ]
    assert cut_text("short", 0) == ("short", None)


def test_endpoint_precedence_task_then_slot_then_global(tmp_path: Path, settings: Settings) -> None:
    servers = {name: FakeChatServer().start() for name in ("task", "slot", "global")}
    try:
        settings.llm_endpoint = servers["global"].url + "/v1/"  # a URL ending in /v1 works too
        settings.llm_slot_endpoints = {"gpu1": servers["slot"].url}
        settings.llm_model = "configured"
        task_endpoint = servers["task"].url + "/v1/chat/completions"  # and the full URL
        run_llm(spec_for(tmp_path, endpoint=task_endpoint), make_ctx(tmp_path, settings, "gpu1"))
        run_llm(spec_for(tmp_path), make_ctx(tmp_path, settings, "gpu1"))
        run_llm(spec_for(tmp_path), make_ctx(tmp_path, settings, "gpu0"))
        assert {name: len(s.chats()) for name, s in servers.items()} == {"task": 1, "slot": 1, "global": 1}
        assert all(s.chats()[0].body["model"] == "configured" for s in servers.values())
    finally:
        for server in servers.values():
            server.stop()
    assert chat_url("http://h:1") == chat_url("http://h:1/v1") == "http://h:1/v1/chat/completions"
    assert shown_url("http://user:pw@h:1/v1") == "http://***@h:1/v1"


def _all_text(err: ScribefleetError) -> str:
    return json.dumps(err.to_dict(), default=str) + str(err)


def test_the_api_key_is_a_bearer_header_and_appears_nowhere_else(
    tmp_path: Path, settings: Settings, fake: FakeChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(_env_file=None, llm_endpoint=fake.url, llm_api_key=SECRET, cache_dir=tmp_path)
    caplog.set_level(logging.DEBUG, logger="scribefleet")
    result = run_llm(spec_for(tmp_path), make_ctx(tmp_path, settings))
    assert {r.headers.get("Authorization") for r in fake.requests} == {f"Bearer {SECRET}"}  # /v1/models too
    fake.mode = "error"
    with pytest.raises(LlmFailed) as failed:
        run_llm(spec_for(tmp_path), make_ctx(tmp_path, settings))
    seen = [json.dumps(result), _all_text(failed.value), caplog.text, (tmp_path / "logs" / "t1.log").read_text()]
    seen += [settings.model_dump_json(), repr(settings), str(settings)]
    assert all(SECRET not in text for text in seen)
    assert SECRET in json.dumps(settings.model_dump(mode="json", context={"reveal_secrets": True}))  # for slots only


def test_a_refused_port_and_a_dropped_connection_are_unreachable_and_retryable(
    tmp_path: Path, settings: Settings, fake: FakeChatServer
) -> None:
    settings.llm_endpoint, settings.llm_model = f"http://127.0.0.1:{free_port()}", "m"
    with pytest.raises(LlmUnreachable) as refused:
        run_llm(spec_for(tmp_path), make_ctx(tmp_path, settings))
    assert refused.value.code == "LLM_UNREACHABLE" and refused.value.retryable
    assert "cannot connect" in refused.value.message and refused.value.details["endpoint"].startswith("http://127.0.0.1:")
    settings.llm_endpoint, fake.mode = fake.url, "drop"
    with pytest.raises(LlmUnreachable):
        run_llm(spec_for(tmp_path), make_ctx(tmp_path, settings))
    assert not (tmp_path / "out").exists()


def test_a_server_that_hangs_past_the_timeout_is_unreachable(tmp_path: Path, settings: Settings, fake: FakeChatServer) -> None:
    settings.llm_endpoint, settings.llm_model, settings.llm_timeout_s = fake.url, "m", 0.5
    fake.mode = "hang"
    with pytest.raises(LlmUnreachable) as hung:
        run_llm(spec_for(tmp_path), make_ctx(tmp_path, settings))
    assert "no answer within 0.5 s" in hung.value.message and hung.value.retryable
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("mode", "status", "words"),
    [("error", 500, "model exploded"), ("malformed", 200, "not JSON"), ("no_choices", 200, "without choices")],
)
def test_http_errors_and_answers_without_choices_fail_with_llm_failed(
    tmp_path: Path, settings: Settings, fake: FakeChatServer, mode: str, status: int, words: str
) -> None:
    settings.llm_endpoint, settings.llm_model = fake.url, "m"
    fake.mode = mode
    with pytest.raises(LlmFailed) as failed:
        run_llm(spec_for(tmp_path), make_ctx(tmp_path, settings))
    err = failed.value
    assert err.code == "LLM_FAILED" and words in err.message and not err.retryable
    assert err.details.get("status", 200) == status
    if mode == "error":
        assert err.details["error"] == "model exploded"  # the endpoint's own words
    assert not (tmp_path / "out").exists()


def test_bad_specs_and_missing_inputs_fail_with_their_codes(tmp_path: Path, settings: Settings, fake: FakeChatServer) -> None:
    settings.llm_endpoint = fake.url
    with pytest.raises(InputNotFound) as missing:
        run_llm({**spec_for(tmp_path), "input": str(tmp_path / "gone.json")}, make_ctx(tmp_path, settings))
    assert missing.value.code == "INPUT_NOT_FOUND" and "gone.json" in missing.value.message
    with pytest.raises(UsageError, match="prompt"):
        run_llm({**spec_for(tmp_path), "prompt": "no placeholder"}, make_ctx(tmp_path, settings))
    settings.llm_endpoint = "ftp://example.invalid"
    with pytest.raises(UsageError, match="not a usable http"):
        run_llm(spec_for(tmp_path, model="m"), make_ctx(tmp_path, settings))
    assert fake.requests == []


def test_an_existing_answer_is_replaced_whole(tmp_path: Path, settings: Settings, fake: FakeChatServer) -> None:
    settings.llm_endpoint, settings.llm_model = fake.url, "m"
    out = tmp_path / "out" / "talk.summary.txt"
    out.parent.mkdir()
    out.write_text("an old and much longer answer that must not survive in part\n" * 5)
    run_llm(spec_for(tmp_path), make_ctx(tmp_path, settings))
    assert out.read_text().startswith("14 words:") and out.read_text().count("\n") == 1
    assert [p.name for p in out.parent.iterdir()] == ["talk.summary.txt"]



def run_batch(tmp_path: Path, settings: Settings, tasks: dict[str, dict[str, Any]], seen: Any = None) -> dict[str, Any]:
    """Run llm tasks (key -> spec, with max_attempts) on one real CPU slot through the Dispatcher; key -> Task."""
    from scribefleet.dispatch.dispatcher import Dispatcher
    from scribefleet.engines.base import SlotSpec
    from scribefleet.engines.local import LocalEngine
    from scribefleet.logs import setup_logging
    from scribefleet.store import Store

    state_dir = tmp_path / "state"
    setup_logging(state_dir / "logs" / "scribefleet.log", verbose=True)
    store = Store.open(state_dir)
    try:
        batch = store.ensure_batch("llm", "plan", {}, str(tmp_path))
        for key, spec in tasks.items():
            store.add_task(batch, key, "llm", spec, max_attempts=spec.pop("max_attempts", 1), timeout_s=300)
        engine = LocalEngine(settings, state_dir, [SlotSpec("cpu0", "cpu", cpu_threads=1)])
        listeners = [lambda event: seen(engine, event)] if seen else []
        try:
            Dispatcher(store, engine, settings, listeners=listeners).run(burst=True, batch_id=batch)
        finally:
            engine.stop()
        done = {t.key: t for t in store.tasks(batch)}
        return {**done, "events": {k: [e.type for e in store.events(task_id=t.id)] for k, t in done.items()}}
    finally:
        store.close()
        setup_logging(None)
        logging.getLogger("scribefleet").setLevel(logging.WARNING)


def test_llm_tasks_on_a_real_slot_through_the_dispatcher(tmp_path: Path, fake: FakeChatServer) -> None:
    from scribefleet.store import TaskState

    settings = Settings(
        _env_file=None, cache_dir=tmp_path / "cache", llm_api_key=SECRET, llm_slot_endpoints={"cpu0": fake.url},
        llm_endpoint=f"http://127.0.0.1:{free_port()}",  # nothing listens: only the slot's own endpoint works
    )  # fmt: skip
    cmdlines: list[bytes] = []

    def note_cmdline(engine: Any, event: Any) -> None:
        if event.type == "task_progress":
            cmdlines.append(Path(f"/proc/{engine.slot(event.data['slot']).pid}/cmdline").read_bytes())

    tasks = run_batch(tmp_path, settings, {
        "good": spec_for(tmp_path),
        "refused": {**spec_for(tmp_path, endpoint=settings.llm_endpoint, model="m"), "max_attempts": 2},
        "missing": {**spec_for(tmp_path), "input": str(tmp_path / "gone.txt"), "max_attempts": 2},
    }, seen=note_cmdline)  # fmt: skip
    good = tasks["good"]
    assert good.state is TaskState.COMPLETE and good.slot == "cpu0"
    assert good.result["model"] == FAKE_MODEL and good.result["usage"]["total_tokens"] == 21
    assert Path(good.result["output"]).read_text() == fake_answer("Summarize talk.json: " + TRANSCRIPT["text"].strip()) + "\n"
    assert {r.headers["Authorization"] for r in fake.requests} == {f"Bearer {SECRET}"}  # the key reached the slot
    refused = tasks["refused"]
    assert (refused.state, refused.error_code, refused.attempts) == (TaskState.FAILED, "LLM_UNREACHABLE", 2)
    assert tasks["events"]["refused"].count("dispatched") == 2  # retryable: tried again, then failed
    missing = tasks["missing"]
    assert (missing.state, missing.error_code, missing.attempts) == (TaskState.FAILED, "INPUT_NOT_FOUND", 1)
    # the key travelled over the slot's socket only: not in its command line, logs, events or store
    assert cmdlines and all(SECRET.encode() not in c for c in cmdlines)
    state_dir = tmp_path / "state"
    assert [p for p in state_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()] == []
    assert (state_dir / "logs" / "slot-cpu0.log").read_text().count("asking") == 3  # 1 good + 2 refused attempts


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama.cpp's real server on SmolLM2-135M (skips, saying why, where it is not installed)."""
    why = llama_unavailable()
    if why:
        pytest.skip(why)
    gguf = smollm2_gguf()
    assert gguf is not None
    server = LlamaServer(gguf, tmp_path_factory.mktemp("llama") / "server.log").start()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_one_line_summary_from_llama_cpp_on_a_real_slot(tmp_path: Path, llama: LlamaServer) -> None:
    from scribefleet.store import TaskState

    settings = Settings(_env_file=None, cache_dir=tmp_path / "cache", llm_endpoint=llama.url + "/v1")
    spec = spec_for(
        tmp_path, prompt="Summarize this meeting transcript in one short sentence.\n\n{{text}}",
        system="You are a helpful assistant.", max_tokens=48, temperature=0.0,
    )  # fmt: skip
    task = run_batch(tmp_path, settings, {"summary": spec})["summary"]
    assert task.state is TaskState.COMPLETE, (task.error_code, task.error_message)
    answer = Path(task.result["output"]).read_text()
    assert answer.strip() and answer.endswith("\n")  # a small model's words are not predictable: shape only
    assert task.result["model"].endswith(".gguf")  # no model named anywhere: the one the server lists
    assert task.result["usage"]["completion_tokens"] > 0 and task.result["usage"]["prompt_tokens"] > 20
