"""NodeEngine: a synchronous, thread-safe facade over the node's own asyncio loop.

One worker thread runs one asyncio loop; the gRPC server and the runtime live on it, heavy tensor
work runs in an executor so heartbeats are answered while a layer computes. Callers (the Qt UI,
the headless runner, tests) use ``start``/``stop``/``post`` from any thread except the loop's own
(which would deadlock, and is asserted against), and receive immutable events through
``subscribe``. torch is first imported on the engine thread, so a window can show before it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from app.node import disk, hardware
from app.node.config import ConfigError, NodeConfig, UsageCaps, ensure_data_dir
from app.node.datadir_lock import DataDirBusy, DataDirLock
from app.node.events import (
    STATE_TRANSITIONS,
    Command,
    ErrorOccurred,
    Event,
    FinishStepThenStop,
    HardwareMeasured,
    MigrationProgress,
    NodeState,
    Pause,
    Remeasure,
    ResolveCorruptCheckpoint,
    Resume,
    RunFinished,
    SetUsageCaps,
    StatusChanged,
    UsageCapsChanged,
)
from app.node.faults import (
    EXIT_DISK_FULL,
    CheckpointDecision,
    FaultStop,
    disk_full_message,
    is_disk_full,
    on_disk_full,
)
from app.node.logs import attach_disk_full_spotter, attach_event_handler, configure_file_logging
from app.node.runtime_api import RunControl, Runtime, RuntimeContext, RuntimeFactory
from app.node.throttle import DutyCycle, MeteredExecutor, default_threads
from app.node.usage import UsageCapsHub

log = logging.getLogger("neuroshard.engine")
Subscriber = Callable[[Event], None]
_reporting = threading.local()


class EngineError(RuntimeError):
    pass


def _default_runtime_factory(ctx: RuntimeContext) -> Runtime:
    from app.node.runtime import create_runtime  # heavy: torch, grpc

    return create_runtime(ctx)


class NodeEngine:
    def __init__(self, config: NodeConfig, runtime_factory: RuntimeFactory | None = None) -> None:
        config.validate()
        self.config = config
        self._factory = runtime_factory or _default_runtime_factory
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._main_task: asyncio.Task[int] | None = None
        self._control: RunControl | None = None
        self._runtime: Runtime | None = None
        self._executor: MeteredExecutor | None = None
        self._usage = UsageCapsHub(config.limits.caps(in_use=False))
        self._device = "cpu"  # until measured: the share that applies is cpu_share
        self._state = StatusChanged(state=NodeState.STOPPED)
        self._latest: dict[str, Event] = {}
        self._exit_code: int | None = None
        self._done = threading.Event()
        self._log_detach: Callable[[], None] | None = None
        self._events_detach: Callable[[], None] = lambda: None
        self._posted: set[concurrent.futures.Future[Any]] = set()
        self._checkpoint_decision = CheckpointDecision()
        self._dir_lock = DataDirLock(config.data_dir)
        self._fault: FaultStop | None = None  # a fault that stops the node (the first one wins)

    # --- observation ------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every event, on the thread that emitted it; returns unsubscribe."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    @property
    def state(self) -> NodeState:
        return self._state.state

    def latest(self, kind: str) -> Event | None:
        """The most recent event of a kind (a page opened late renders from it)."""
        with self._lock:
            return self._latest.get(kind)

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber; safe from any thread."""
        with self._lock:
            self._latest[event.kind] = event
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # a broken subscriber must not take the node down
                self._report_subscriber_failure(callback)

    def _report_subscriber_failure(self, callback: Subscriber) -> None:
        # Logging becomes a LogLine event, which reaches the same broken subscriber again:
        # report once per thread and swallow the nested failure instead of recursing.
        if getattr(_reporting, "active", False):
            return
        _reporting.active = True
        try:
            log.exception("event subscriber %r failed", callback)
        finally:
            _reporting.active = False

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread and return at once; progress arrives as events."""
        if self._thread is not None:
            raise EngineError("engine already started")
        try:
            ensure_data_dir(self.config.data_dir)
            self._dir_lock.acquire()  # before anything is written there: one process per data dir
        except (ConfigError, DataDirBusy) as exc:
            raise EngineError(str(exc)) from exc
        try:
            self._log_detach = configure_file_logging(self.config.log_dir, self.config.log_level)
            self._thread = threading.Thread(target=self._thread_main, name="neuroshard-engine", daemon=True)
            self._thread.start()
        except BaseException:
            self._dir_lock.release()
            raise
        self._ready.wait(timeout=10)

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the node to stop and wait up to ``timeout`` s; True if everything ended in time."""
        self._assert_not_loop_thread()
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return True
        if not loop.is_closed():
            # The loop may close between the check and the call: then there is nothing to stop.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._request_stop)
        thread.join(timeout)
        return not thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the node finished on its own or was stopped; True when it has."""
        return self._done.wait(timeout)

    def post(self, command: Command) -> concurrent.futures.Future[Any]:
        """Post a command from any thread but the loop's; the future holds its result."""
        self._assert_not_loop_thread()
        if self._loop is None or self._loop.is_closed():
            raise EngineError("the engine is not running")
        future = asyncio.run_coroutine_threadsafe(self._dispatch(command), self._loop)
        with self._lock:
            self._posted.add(future)
        future.add_done_callback(self._posted.discard)
        return future

    def call(self, command: Command, timeout: float = 10.0) -> Any:
        """``post`` and wait for the result."""
        return self.post(command).result(timeout)

    # --- loop thread ------------------------------------------------------------------------

    def _assert_not_loop_thread(self) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise EngineError("called from the engine's own loop thread: this would deadlock")

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        duty = DutyCycle()
        self._executor = MeteredExecutor(2, duty, thread_name_prefix="neuroshard-work")
        loop.set_default_executor(self._executor)
        end_disk_cap = disk.register(disk.DiskBudget(
            self.config.data_dir, self.config.limits.disk_bytes,
            on_refused=lambda message: self.emit(ErrorOccurred(message=message, fatal=False))))
        end_disk_full = on_disk_full(lambda where, exc: self._on_disk_full(loop, where, exc))
        end_spotter = attach_disk_full_spotter()
        try:
            self._control = RunControl(duty)
            self._events_detach = attach_event_handler(self.emit)
            self._main_task = loop.create_task(self._main())
            self._ready.set()
            self._exit_code = loop.run_until_complete(self._main_task)
        except BaseException as exc:  # the thread must always end cleanly and say why
            self._exit_code = 1
            self.emit(ErrorOccurred(message=f"engine crashed: {exc}", fatal=True))
        finally:
            try:
                self._ready.set()
                end_disk_full()
                end_spotter()
                end_disk_cap()
                self._events_detach()
                self._close_loop(loop)
            finally:  # whatever failed above, the lock goes and waiters wake (never a hang)
                self._dir_lock.release()
                self._done.set()

    def _close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._executor is not None
        try:
            self._executor.release()
            self._executor.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(Exception):
                self._executor.restore_threads()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            from app.node.p2p.aio import release_grpc_after_loop  # (the window starts without p2p)

            release_grpc_after_loop()  # the next start's loop binds gRPC afresh
            # A command posted while the loop was closing never ran: fail it instead of hanging its caller.
            with self._lock:
                stranded, self._posted = list(self._posted), set()
            for future in stranded:
                future.cancel()
        finally:
            if self._log_detach is not None:
                with contextlib.suppress(Exception):  # a full disk can fail the last flush
                    self._log_detach()

    def _on_disk_full(self, loop: asyncio.AbstractEventLoop, where: str, exc: BaseException) -> None:
        """From any thread: a write site ran out of space; stop the node with EXIT_DISK_FULL."""
        def stop() -> None:
            if self._fault is None:
                self._fault = FaultStop(disk_full_message(self.config.data_dir, where, exc), EXIT_DISK_FULL)
            self._request_stop()

        with contextlib.suppress(RuntimeError):  # the loop already closed: the node is stopping anyway
            loop.call_soon_threadsafe(stop)

    def _set_state(self, state: NodeState, detail: str = "") -> None:
        current = self._state.state
        if state == current and detail == self._state.detail:
            return
        if state != current and state not in STATE_TRANSITIONS[current]:
            raise EngineError(f"invalid state change {current.value} -> {state.value}")
        self._state = StatusChanged(state=state, detail=detail)
        log.info("state %s%s", state.value, f" ({detail})" if detail else "")
        self.emit(self._state)

    def _request_stop(self) -> None:
        if self._control is not None:
            self._control.request_stop()

    async def _main(self) -> int:
        self._set_state(NodeState.STARTING)
        code = 1
        stopped_for: FaultStop | None = None
        try:
            self._apply_caps(self._usage.caps)
            report = await self._measure(force=False)
            self._set_state(NodeState.JOINING)
            loop = asyncio.get_running_loop()
            ctx = RuntimeContext(self.config, report, self.emit, self._set_state, self._control,
                                 self._executor, loop, usage=self._usage,
                                 checkpoint_decision=self._checkpoint_decision)
            self._runtime = await loop.run_in_executor(None, self._factory, ctx)
            code = await self._runtime.run()
            if self._fault is not None:
                raise self._fault
            self.emit(RunFinished(steps=self._runtime.steps_done, exit_code=code))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if (task is not None and task.cancelling()) or self._control is None or self._control.stop_requested:
                code = 0  # a real stop: the engine (or the loop closing) cancelled us
            else:  # a CancelledError leaked out of some await while nobody asked to stop: a fault
                log.error("the node's work ended with a CancelledError nobody asked for", exc_info=True)
                message = ("the node's work was cancelled although no stop was requested (a bug; the "
                           "traceback is in the log); the node stopped")
                self.emit(ErrorOccurred(message=message, fatal=True))
                self._state = StatusChanged(state=NodeState.ERROR, detail=message)
                self.emit(self._state)
                code = 1
        except FaultStop as exc:  # a deliberate stop: the message says why and what to do
            stopped_for = exc
        except Exception as exc:
            if self._fault is not None or is_disk_full(exc):  # the run failed because the disk is full
                stopped_for = self._fault or FaultStop(
                    disk_full_message(self.config.data_dir, "writing", exc), EXIT_DISK_FULL)
            else:
                log.exception("node failed")
                self.emit(ErrorOccurred(message=_describe_error(exc), fatal=True))
                self._state = StatusChanged(state=NodeState.ERROR, detail=str(exc))
                self.emit(self._state)
                code = 1
        finally:
            if stopped_for is not None:
                code = self._stop_for_fault(stopped_for)
            await self._shutdown_runtime()
            if stopped_for is None and self._fault is not None:  # the disk filled up while stopping
                code = self._stop_for_fault(self._fault)
        return code

    def _stop_for_fault(self, fault: FaultStop) -> int:
        log.error("%s", fault)
        self.emit(ErrorOccurred(message=str(fault), fatal=True))
        self._state = StatusChanged(state=NodeState.ERROR, detail=str(fault))
        self.emit(self._state)
        return fault.exit_code

    async def _measure(self, force: bool) -> hardware.HardwareReport:
        if self.state != NodeState.MEASURING and NodeState.MEASURING in STATE_TRANSITIONS[self.state]:
            self._set_state(NodeState.MEASURING, "benchmarking one reference layer")
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(
            None, lambda: hardware.measure_or_cached(self.config.data_dir, self.config.device, force=force,
                                                     gpu_ids=self.config.limits.gpu_ids)
        )
        self._device = report.device.device
        assert self._executor is not None
        self._executor.set_cuda_device(report.device.index if self._device == "cuda" else None)
        self._apply_caps(self._usage.caps)  # the share that applies depends on the device
        self.emit(HardwareMeasured(
            device=report.device.device, device_name=report.device.name,
            memory_bytes=report.device.memory_bytes, ms_per_layer=round(report.ms_per_layer, 2),
            tier=report.tier.value, cached=report.cached,
        ))
        return report

    async def _shutdown_runtime(self) -> None:
        if self.state not in (NodeState.ERROR, NodeState.STOPPED):
            self._set_state(NodeState.STOPPING)
        if self._executor is not None:
            self._executor.release()  # the last checkpoint must not wait out the CPU share
        if self._runtime is not None:
            try:
                async with asyncio.timeout(4.0):
                    await self._runtime.shutdown()
            except Exception:
                log.exception("runtime did not shut down cleanly")
        if self.state != NodeState.STOPPED:
            self._state = StatusChanged(state=NodeState.STOPPED)
            self.emit(self._state)

    async def _dispatch(self, command: Command) -> Any:
        control = self._control
        assert control is not None
        if isinstance(command, Pause):
            control.pause()
            if command.until is not None:
                asyncio.get_running_loop().call_later(max(0.0, command.until - time.time()), control.resume)
            return True
        if isinstance(command, Resume):
            control.resume()
            return True
        if isinstance(command, FinishStepThenStop):
            control.finish_step_then_stop = True
            control.request_stop()
            return True
        if isinstance(command, Remeasure):
            report = await self._measure(force=True)
            return report.to_dict()
        if isinstance(command, SetUsageCaps):
            return self._apply_caps(command.caps)
        if isinstance(command, ResolveCorruptCheckpoint):
            return self._checkpoint_decision.answer(command.choice)
        if self._runtime is None:
            raise EngineError("the node is still starting; try again in a moment")
        return await self._runtime.handle(command)

    def _apply_caps(self, caps: UsageCaps) -> UsageCapsChanged:
        """Enforce ``caps`` from now on (loop thread): torch threads in every worker, the duty
        cycle's share for this device, and the runtime's subscribers (bandwidth); publishes them."""
        assert self._executor is not None and self._control is not None
        self._usage.set(caps)  # validates first: a bad set changes nothing
        threads = caps.cpu_threads or default_threads()
        share = caps.gpu_share if self._device in ("cuda", "mps") else caps.cpu_share
        self._executor.set_threads(threads)
        self._control.duty.set_share(share)
        event = UsageCapsChanged(caps=caps, threads=threads, share=share, device=self._device)
        log.info("%s", event.describe())
        self.emit(event)
        return event


def _describe_error(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text if isinstance(exc, (ConfigError, EngineError, OSError)) else f"{exc.__class__.__name__}: {text}"


# --- architecture migration (app/node/migration.py), for a stopped node -----------------------------

def _memory_budget(config: NodeConfig) -> int:
    report = hardware.load_cached(config.data_dir)
    if report is None:
        return 0  # never measured here: the dry run says "not checked" rather than guess
    return hardware.memory_budget_bytes(report.device, config.limits.memory_fraction, config.limits.memory_bytes)


def migration_plan(config: NodeConfig) -> dict[str, Any]:
    """The dry run of the waiting upgrade on ``config``'s data dir (changes nothing; any thread).
    Raises EngineError with a message for the volunteer when there is nothing to migrate."""
    from app.node.migration import MigrationError, dry_run

    try:
        return dry_run(config.data_dir, memory_budget_bytes=_memory_budget(config)).to_dict()
    except (MigrationError, ValueError) as exc:
        raise EngineError(str(exc)) from exc


def run_migration(config: NodeConfig, on_progress: Callable[[Event], None], *, reset_ledger: bool = False,
                  fresh: bool = False, distill_steps: int = 0) -> dict[str, Any]:
    """Migrate the stopped node's data dir (worker thread; holds the data dir's lock meanwhile).
    Progress arrives as MigrationProgress events; returns the result (migration.MigrationResult)."""
    from app.node.migration import MigrationError, apply, recover

    lock = DataDirLock(config.data_dir)
    try:
        lock.acquire()
    except DataDirBusy as exc:
        raise EngineError(f"{exc}; stop the node first") from exc
    try:
        restored = recover(config.data_dir)
        if restored:
            on_progress(ErrorOccurred(message=restored, fatal=False))
        result = apply(config.data_dir, memory_budget_bytes=_memory_budget(config), reset_ledger=reset_ledger,
                       fresh=fresh, distill_steps=distill_steps,
                       progress=lambda phase, fraction, text: on_progress(
                           MigrationProgress(phase=phase, fraction=fraction, message=text)))
    except (MigrationError, ValueError) as exc:
        raise EngineError(str(exc)) from exc
    except Exception as exc:  # a failure midway (disk full, a crash in growth): roll back now
        raise EngineError(f"the migration failed ({_describe_error(exc)}); "
                          f"{recover(config.data_dir) or 'nothing was changed'}") from exc
    finally:
        lock.release()
    return result.to_dict()
