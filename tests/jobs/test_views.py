"""jobs/views.py: one view of a task, written as the CLI's JSON and as the API's, and read back from the API's."""

from __future__ import annotations

from pathlib import Path

from scribefleet.jobs.views import TaskView, task_view
from scribefleet.store.store import Store


def test_one_view_two_spellings(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    batch_id = store.ensure_batch("k", "api", {}, None)
    spec = {"display": "talk.wav", "input_path": "/in/talk.wav", "outputs": {"srt": "/o/talk.srt"}, "options": {"model": "tiny.en"}}
    task = store.task(store.add_task(batch_id, "x/talk.wav", "transcribe", spec))
    view = task_view(task)
    cli = view.as_json(state_dir=str(tmp_path))
    assert cli["id"] == cli["job_id"] == task.id and cli["state"] == cli["status"] == "queued"
    assert (cli["name"], cli["input"], cli["state_dir"], cli["outputs"]) == ("talk.wav", "/in/talk.wav", str(tmp_path), {})
    api = view.as_api_json()
    assert (api["id"], api["batchId"], api["filename"], api["status"], api["worker"]) == (task.id, batch_id, "talk.wav", "queued", None)
    assert api["progress"] == {"stage": None, "percent": 0.0, "stagePercent": 0.0} and api["options"] == {"model": "tiny.en"}
    back = TaskView.from_api({**api, "status": "complete", "outputs": {"srt": f"/api/jobs/{task.id}/outputs/srt"}}, "http://c")
    assert (back.id, back.name, back.batch_id, back.is_terminal) == (task.id, "talk.wav", batch_id, True)
    assert back.outputs == {"srt": f"http://c/api/jobs/{task.id}/outputs/srt"}
