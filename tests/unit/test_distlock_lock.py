"""The Lock front and LostSignal, over an in-memory backend (the contract, minus a server)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from distlock import (
    Grant,
    Lock,
    LockBackend,
    LockLost,
    LockState,
    LockTimeout,
    LostSignal,
    NotHeldError,
)


class MemoryBackend(LockBackend):
    """One process-wide lock table; waits are real waits on a condition variable."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.holders: dict[str, Grant] = {}
        self.counter = 0
        self.released: list[Grant] = []

    @property
    def identity(self) -> str:
        return "memory"

    def acquire(self, name: str, *, timeout: float | None,
                cancel: threading.Event | None = None) -> Grant | None:
        with self.condition:
            def free() -> bool:
                return name not in self.holders or bool(cancel and cancel.is_set())

            if timeout is not None and timeout <= 0:
                granted = free()
            else:
                while not self.condition.wait_for(free, timeout=0.05 if cancel else timeout):
                    if timeout is not None:
                        return None
                granted = name not in self.holders
            if not granted:
                return None
            self.counter += 1
            grant = Grant(name=name, token=self.counter, holder=f"memory-{self.counter}")
            self.holders[name] = grant
            return grant

    def release(self, grant: Grant) -> None:
        with self.condition:
            if self.holders.get(grant.name) is grant:
                del self.holders[grant.name]
                self.released.append(grant)
                self.condition.notify_all()

    def inspect(self, name: str) -> LockState:
        grant = self.holders.get(name)
        return LockState(name, grant.holder if grant else None, grant.token if grant else None, ())

    def close(self) -> None:
        self.holders.clear()


def test_acquire_returns_increasing_tokens_and_release_frees() -> None:
    backend = MemoryBackend()
    lock = backend.lock("job")
    first = lock.acquire()
    assert lock.token == first
    assert backend.inspect("job").token == first
    lock.release()
    assert not lock.held
    with lock:
        assert lock.token > first


def test_a_lock_is_not_reentrant() -> None:
    lock = MemoryBackend().lock("job")
    lock.acquire()
    with pytest.raises(RuntimeError, match="not reentrant"):
        lock.acquire()


def test_timeouts_and_try() -> None:
    backend = MemoryBackend()
    backend.lock("job").acquire()
    other = backend.lock("job", timeout=0.05)
    assert not other.try_acquire()
    with pytest.raises(LockTimeout, match="still held"):
        other.acquire()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(LockTimeout, match="cancelled"):
        other.acquire(None, cancel=cancel)


def test_using_a_lock_that_is_not_held_is_an_error() -> None:
    lock = MemoryBackend().lock("job")
    with pytest.raises(NotHeldError):
        lock.release()
    with pytest.raises(NotHeldError):
        _ = lock.token
    with pytest.raises(NotHeldError):
        lock.check()


@pytest.mark.parametrize("timeout", [-1, "5", True])
def test_bad_timeouts_and_names_are_refused(timeout: object) -> None:
    backend = MemoryBackend()
    with pytest.raises(ValueError, match="timeout"):
        Lock(backend, "job", timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        backend.lock("job").acquire(timeout)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        backend.lock("")


def test_lost_reaches_the_callback_held_and_check() -> None:
    reasons: list[str] = []
    lock = MemoryBackend().lock("job", on_lost=reasons.append)
    lock.acquire()
    lock.check()
    assert lock.grant is not None
    lock.grant.lost.fire("lease expired")
    lock.grant.lost.fire("a second reason is ignored")
    assert reasons == ["lease expired"]
    assert not lock.held
    with pytest.raises(LockLost, match="lease expired"):
        lock.check()


def test_a_callback_added_after_the_loss_runs_at_once_and_a_raising_one_is_contained() -> None:
    signal = LostSignal()
    seen: list[str] = []

    def broken(_reason: str) -> None:
        raise RuntimeError("user bug")

    signal.add_callback(broken)
    signal.fire("keepalive failed")
    signal.add_callback(seen.append)
    assert seen == ["keepalive failed"]
    assert signal.wait(0)
    assert signal.reason == "keepalive failed"


def test_async_context_manager_and_cancellation_leave_nothing_held() -> None:
    backend = MemoryBackend()

    async def scenario() -> None:
        async with backend.lock("job") as held:
            waiter = asyncio.ensure_future(backend.lock("job").acquire_async(None))
            await asyncio.sleep(0)  # let the waiter start its worker thread
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert held.held
        assert "job" not in backend.holders

    asyncio.run(scenario())


def test_distlock_never_imports_pulumi() -> None:
    # grpc is allowed: the etcd backend speaks gRPC (distlock/_etcd_grpc.py).
    code = ("import sys, distlock, distlock.etcd, distlock._cli; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'pulumi']; "
            "sys.exit(f'distlock imported {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
