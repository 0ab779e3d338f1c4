"""The UI's own rules, without a browser: where a login may send the browser (test_ui_browser.py does it in Chromium)."""

from __future__ import annotations

import pytest

from scribefleet.service.ui import safe_next
from service.harness import Service

pytestmark = pytest.mark.anyio


def test_only_paths_of_this_site_are_login_targets() -> None:
    for foreign in (
        "//evil.example/", "/\t/evil.example/", "/\n/evil.example", "/\r\n/evil.example", "/\\evil.example",
        "\\\\evil.example", "///evil.example", "http://evil.example/", "https:evil.example", "javascript:alert(1)",
        " //evil.example", "/\u202e/evil.example", "/\x00/evil.example", "evil.example", "", "/ui/\t",
    ):  # fmt: skip
        assert safe_next(foreign) == "/ui/", repr(foreign)
    for own in ("/ui/", "/ui/runtime", "/ui/jobs/abc?x=1", "/ui/%2F%2Fevil.example", "/ui/batches/b#top"):
        assert safe_next(own) == own


async def test_the_login_page_embeds_only_a_safe_target(idle: Service) -> None:
    async with idle.client() as client:
        for query, target in (("next=%2F%09%2Fevil.example%2F", "/ui/"), ("next=%2Fui%2Fruntime", "/ui/runtime")):
            page = await client.get(f"/ui/login?{query}")
            assert page.status_code == 200 and f'data-next="{target}"' in page.text, page.text
