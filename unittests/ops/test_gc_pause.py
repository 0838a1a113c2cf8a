"""gc_paused: collection off inside, back as it was once the last holder (nested or another
thread) leaves, also when the block raises."""

import gc
import threading

import pytest

from dojo.ops.gc_pause import gc_paused


@pytest.fixture(autouse=True)
def collector_restored():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_nested_and_concurrent_holders_share_one_pause():
    gc.enable()
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with gc_paused():
            inside.set()
            leave.wait(10)

    other = threading.Thread(target=hold)
    with gc_paused():
        other.start()
        inside.wait(10)
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert not gc.isenabled(), "the other thread still holds it"
    leave.set()
    other.join(10)
    assert gc.isenabled()


def test_a_raising_block_restores_it_and_a_disabled_collector_stays_off():
    gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()

    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()
