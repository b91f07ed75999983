"""The event loop choice: uvloop by default where installed, GOOSE_EVENT_LOOP to choose."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest
from support import CountingTarget, run_cli

from goose_redis import loop
from goose_redis.errors import InvalidOption

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def _running_loop_module() -> str:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    return loop.run(which())


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed here")
def test_default_is_uvloop_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loop.ENV, raising=False)
    assert loop.choose()[0] == "uvloop"
    assert _running_loop_module().startswith("uvloop")
    monkeypatch.setenv(loop.ENV, "uvloop")
    assert _running_loop_module().startswith("uvloop")


def test_asyncio_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.ENV, "asyncio")
    assert loop.choose() == ("asyncio", None)
    assert _running_loop_module().startswith("asyncio")


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "_uvloop_factory", lambda: None)
    assert loop.choose({loop.ENV: "auto"}) == ("asyncio", None)
    assert loop.choose({}) == ("asyncio", None)
    with pytest.raises(InvalidOption, match="uvloop is not installed"):
        loop.choose({loop.ENV: "uvloop"})


def test_a_bad_setting_is_refused_and_the_coroutine_not_leaked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.ENV, "tokio")

    async def never() -> int:
        raise AssertionError("must not run")

    coro = never()
    with pytest.raises(InvalidOption) as err:
        loop.run(coro)
    assert err.value.option == loop.ENV and err.value.value == "tokio"
    assert coro.cr_frame is None  # closed, so no "never awaited" warning


def test_cli_refuses_a_bad_event_loop_with_one_line(target: CountingTarget, tmp_path: Path) -> None:
    lt = tmp_path / "lt.py"
    lt.write_text(
        "from goose_redis import Scenario, Transaction\n\n"
        "async def hit(user):\n    await user.get('/')\n\n"
        "s = Scenario('S').register(Transaction(hit))\n"
    )
    args = ["-f", str(lt), "--host", target.url, "-u", "1", "--iterations", "1"]
    bad = run_cli([*args, "-q"], env={loop.ENV: "tokio"})
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        'Error: InvalidOption { option: "GOOSE_EVENT_LOOP", value: "tokio", '
        'detail: "The GOOSE_EVENT_LOOP variable must be one of: auto, uvloop, asyncio." }'
    ]
    assert target.total() == 0
    for choice in ("asyncio", "auto"):
        ok = run_cli([*args, "-v"], env={loop.ENV: choice})
        assert ok.returncode == 0, ok.stderr
        expected = "uvloop" if choice == "auto" and HAVE_UVLOOP else "asyncio"
        assert f"event loop: {expected}" in ok.stderr
    assert target.total() == 2
