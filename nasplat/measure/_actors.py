"""Evaluation on Ray actors: each actor builds its estimator once (loads the checkpoint, the data, the table)
and then evaluates whole batches of architectures, so a search pays the set-up once per worker, never per
subnet.

``connect_ray`` starts a local Ray cluster sized to the machine, or joins one at ``address``. Without an
address it always starts its own: a cluster a ``ray start`` on this machine left running (Ray's own
``ray.init()`` would silently join the latest one) is joined only when named.

A local cluster is private to this machine and this user:

- every Ray process (GCS, raylet, workers, the driver) listens on 127.0.0.1 only, never on all interfaces.
  Ray has no bind-address option for ``ray.init``; it binds to the node's IP address, and replaces a loopback
  ``_node_ip_address`` with the machine's outward address unless its single-machine mode (the one it uses on
  macOS and Windows, ``ray_constants.ENABLE_RAY_CLUSTER`` off, env ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``)
  is on, so that mode is switched on while the cluster starts (and switched back afterwards);
- token authentication is on (``RAY_AUTH_MODE=token``, Ray's own default for a new local cluster) unless the
  caller set ``RAY_AUTH_MODE=disabled``. Without a token of the caller's (``RAY_AUTH_TOKEN``,
  ``RAY_AUTH_TOKEN_PATH``), a fresh random one is kept in this process's environment, which the cluster's
  processes inherit, instead of Ray's default of writing one to ``~/.ray/auth_token``.

Joining a cluster (``address``) leaves both to that cluster; its address is checked with one TCP connection
first, so an address where nothing answers fails in seconds with one line instead of Ray retrying for
minutes. A loopback address (``127.0.0.1:port``) joins in loopback mode when the cluster listens only there
(a cluster another nasplat process started).

``RayPoolEstimator`` spreads its actors over the cluster's nodes (Ray's ``SPREAD`` strategy: a pool of N actors
on N nodes holds one on each) and keeps a search going when an actor dies, its process or its whole node: Ray
restarts the actor, on a node that has room (``max_restarts``), and submits again the calls whose results had
not come back (``max_retries``); the chunk of an actor gone for good moves to a live one; when none is left the
search stops with one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from nasplat.errors import NasplatError
from nasplat.space import Architecture, SearchSpace

from ._estimator import Estimator

#: seconds to wait for the TCP handshake with a cluster's address before giving up on it
JOIN_TIMEOUT_S = 10.0
#: the ports Ray listens on when an address names none: the GCS (``host``) and the Ray Client (``ray://host``)
_DEFAULT_PORTS = {"": 6379, "ray": 10001}
_TOKEN_SOURCES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
#: the token this module put into os.environ for its local cluster (None: it put none there)
_own_token: str | None = None


def connect_ray(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = False) -> Any:
    """Initialise Ray once per process (a no-op when it already is). ``log_to_driver`` shows workers' output.

    Without ``address`` (nor ``RAY_ADDRESS``, which Ray itself would follow) a local cluster starts on 127.0.0.1
    with token authentication (see the module doc)."""
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "local":
        _join(ray, address, log_to_driver)
    else:
        _start_local(ray, num_cpus, log_to_driver)
    return ray


def _start_local(ray: Any, num_cpus: int | None, log_to_driver: bool) -> None:
    global _own_token
    mode = os.environ.get("RAY_AUTH_MODE", "token").lower()
    if mode != "disabled" and not any(os.environ.get(k) for k in _TOKEN_SOURCES):
        _own_token = secrets.token_hex(32)  # what Ray's own generator makes: 256 random bits
        os.environ["RAY_AUTH_TOKEN"] = _own_token
    # Ray's note that token authentication is on (and how to turn it off) is what this module promises anyway
    quiet = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with _loopback_node():
            ray.init(
                address="local",  # never the cluster in Ray's address file (the latest `ray start` here)
                num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=log_to_driver,
                _node_ip_address="127.0.0.1",
            )  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        raise NasplatError(f"cannot start a local Ray cluster: {_first_line(exc)}") from None
    finally:
        quiet.setLevel(level)


def _join(ray: Any, address: str, log_to_driver: bool) -> None:
    if _own_token is not None and os.environ.get("RAY_AUTH_TOKEN") == _own_token:
        del os.environ["RAY_AUTH_TOKEN"]  # the token of a local cluster that is gone: never offer it elsewhere
    target = _tcp_target(address)
    loopback = False
    if target is not None:
        host, port = target
        _reachable(address, host, port)
        loopback = _is_loopback(host) and not _answers(_outward_ip(), port)
    try:
        with _loopback_node() if loopback else contextlib.nullcontext():
            ray.init(address=address, log_to_driver=log_to_driver)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        raise NasplatError(f"cannot join the Ray cluster at {address}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``, with the gist of its root cause when Ray wrapped one (a wrapped traceback's
    last line, up to its first sentence: "...AuthenticationError: ... token is missing or incorrect")."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    if root is exc:
        return first
    lines = [ln.strip() for ln in str(root).splitlines() if ln.strip()]
    gist = (lines[-1] if "Traceback" in str(root) else lines[0]) if lines else type(root).__name__
    return f"{first} ({gist.split('. ')[0].rstrip('.')})"


def _tcp_target(address: str) -> tuple[str, int] | None:
    """The host and port to reach for ``address`` (None for 'auto', which Ray looks up itself)."""
    if address == "auto":
        return None
    scheme, _, rest = address.rpartition("://")
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):  # [ipv6]:port
        host, _, tail = rest[1:].partition("]")
        port_text = tail.removeprefix(":")
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host, port_text = rest, ""
    try:
        port = int(port_text) if port_text else _DEFAULT_PORTS.get(scheme, _DEFAULT_PORTS[""])
    except ValueError:
        raise NasplatError(f"Ray address '{address}' has no valid port (expected host:port)") from None
    if not host:
        raise NasplatError(f"Ray address '{address}' has no host (expected host:port)")
    return host, port


def _reachable(address: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=JOIN_TIMEOUT_S):
            pass
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc) or type(exc).__name__)
        raise NasplatError(
            f"cannot join the Ray cluster at {address}: nothing answers at {host}:{port} within "
            f"{JOIN_TIMEOUT_S:g} s ({why.lower()}); is a Ray head node running there?"
        ) from None


def _answers(host: str | None, port: int) -> bool:
    if host is None:
        return False
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return True
    except OSError:
        return False


def _is_loopback(host: str) -> bool:
    return host in {"localhost", "::1"} or host.startswith("127.")


def _outward_ip() -> str | None:
    """The address Ray would use for this machine (what it turns a loopback address into), if any."""
    try:
        from ray._private import services

        ip: str = services.node_ip_address_from_perspective(None)
        return None if _is_loopback(ip) else ip
    except Exception:  # no outward address: only loopback can answer
        return None


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Ray's single-machine mode while a node starts or joins: its IP address is 127.0.0.1, so every server it
    starts listens there (the processes it spawns inherit the variable)."""
    from ray._private import ray_constants

    var = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env, saved_flag = os.environ.get(var), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[var] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = saved_env


def _actor_error(exc: BaseException) -> str:
    """One line for a Ray actor error: the exception an actor's constructor raised (the last line of the
    traceback Ray carries), else the first line of Ray's message."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if getattr(exc, "actor_init_failed", False) else lines[0]


class _EvaluatorActor:
    """Holds one estimator; evaluates batches of architectures given as label -> value mappings."""

    def __init__(self, space_record: dict[str, Any], name: str, options: dict[str, Any], threads: int) -> None:
        import torch

        from nasplat import registry
        from nasplat.space import space_from_record

        torch.set_num_threads(threads)
        self.space = space_from_record(space_record)  # the one stored form: keeps the file, embeds base spaces
        self.estimator: Estimator = registry.build("estimator", name, self.space, options=options)

    def describe(self) -> tuple[dict[str, str], dict[str, Any]]:
        return self.estimator.metrics(), self.estimator.provenance()

    def pid(self) -> int:
        """The actor's process id (what a test kills to check that a search survives a dead worker)."""
        return os.getpid()

    def node(self) -> str:
        """The id of the Ray node the actor runs on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def evaluate(self, choices: list[dict[str, Any]]) -> list[dict[str, float]]:
        return self.estimator.evaluate([self.space.make(c) for c in choices])


class RayPoolEstimator(Estimator):
    """An Estimator whose work is spread over ``workers`` Ray actors, each holding its own estimator.

    A dead actor (its process killed, out of memory) is restarted by Ray, up to ``max_restarts`` times, and
    the calls it had not answered are submitted to it again once it is back, up to ``max_retries`` times each
    (Ray's ``max_task_retries``). When an actor is gone for good, its chunk of the batch goes to the next live
    actor; when none is left, ``evaluate`` raises one NasplatError line. Every architecture gets its metrics
    exactly once, in order."""

    name = "ray-pool"
    #: the class each actor runs (a test may wrap it)
    actor_class: ClassVar[type] = _EvaluatorActor

    def __init__(
        self, space: SearchSpace, estimator: str, options: dict[str, Any], *, workers: int,
        address: str | None = None, cpus_per_worker: float = 1.0, max_restarts: int = 3, max_retries: int = 3,
    ) -> None:  # fmt: skip
        if workers < 1:
            raise NasplatError(f"workers must be at least 1, got {workers}")
        if max_restarts < 0 or max_retries < 0:
            raise NasplatError(f"max_restarts and max_retries must be >= 0, got {max_restarts}, {max_retries}")
        ray = connect_ray(address)
        threads = max(1, int(cpus_per_worker))
        actor_cls = ray.remote(num_cpus=cpus_per_worker, max_restarts=max_restarts, max_task_retries=max_retries)(
            self.actor_class
        )
        record = space.to_record()
        self.space = space
        self.inner_name = estimator
        self.max_restarts = max_restarts
        self.max_retries = max_retries
        #: chunks moved to another actor because theirs was gone for good (over this estimator's life)
        self.moved = 0
        self._ray = ray
        spread = actor_cls.options(scheduling_strategy="SPREAD")  # one per node before a second on any
        self._actors = [spread.remote(record, estimator, options, threads) for _ in range(workers)]
        self._dead: set[int] = set()
        try:
            self._metrics, self._provenance = ray.get(self._actors[0].describe.remote())
            #: how many nodes the actors started on (a pool of N on a cluster of N nodes: N)
            self.nodes_at_start = len(set(self.nodes()))
        except ray.exceptions.RayActorError as exc:
            self.close()
            raise NasplatError(f"Ray evaluation worker failed to start: {_actor_error(exc)}") from None

    def metrics(self) -> dict[str, str]:
        return dict(self._metrics)

    def provenance(self) -> dict[str, Any]:  # type: ignore[override]
        return {**self._provenance, "workers": len(self._actors), "nodes": self.nodes_at_start}

    def pids(self) -> list[int]:
        """The process id of each actor, in pool order."""
        return list(self._ray.get([a.pid.remote() for a in self._actors]))

    def nodes(self) -> list[str]:
        """The id of the Ray node each actor runs on, in pool order."""
        return list(self._ray.get([a.node.remote() for a in self._actors]))

    def evaluate(self, archs: Sequence[Architecture]) -> list[dict[str, float]]:
        if not archs:
            return []
        if not self._actors:
            raise NasplatError("this Ray evaluation pool is closed")
        ray = self._ray
        n = len(self._actors)
        choices = [a.as_dict() for a in archs]
        out: list[dict[str, float] | None] = [None] * len(archs)
        pending: dict[Any, tuple[int, list[int]]] = {}  # ref -> (actor index, positions in the batch)

        def submit(actor: int, positions: list[int]) -> None:
            ref = self._actors[actor].evaluate.remote([choices[i] for i in positions])
            pending[ref] = (actor, positions)

        live = [i for i in range(n) if i not in self._dead]
        if not live:
            raise self._all_dead("")
        for k, actor in enumerate(live):  # one chunk per live actor, round robin: similar work per actor
            if positions := list(range(k, len(archs), len(live))):
                submit(actor, positions)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor, positions = pending.pop(ready[0])
            try:
                chunk = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:  # the estimator raised: a user's error stays one line
                if isinstance(exc.cause, NasplatError):
                    raise NasplatError(str(exc.cause)) from None
                raise
            except ray.exceptions.RayActorError as exc:
                # Ray restarted it and retried the call as often as it may: this actor is gone for good
                self._dead.add(actor)
                live = [i for i in range(n) if i not in self._dead]
                if not live:
                    for ref in pending:
                        ray.cancel(ref)
                    raise self._all_dead(_actor_error(exc)) from None
                self.moved += 1
                submit(live[actor % len(live)], positions)
                continue
            if len(chunk) != len(positions):
                raise NasplatError(
                    f"estimator '{self.inner_name}' returned {len(chunk)} results for {len(positions)} architectures"
                )
            for i, metrics in zip(positions, chunk, strict=True):
                out[i] = metrics
        done = [m for m in out if m is not None]
        if len(done) != len(archs):  # every chunk came back once, so this cannot happen; never return a short list
            raise NasplatError(f"no metrics came back for {len(archs) - len(done)} architecture(s) of the batch")
        return done

    def _all_dead(self, last: str) -> NasplatError:
        why = f"; last error: {last}" if last else ""
        return NasplatError(
            f"all {len(self._actors)} Ray evaluation workers died and stayed dead (each restarted up to "
            f"max_restarts={self.max_restarts} times, each call retried up to max_retries={self.max_retries} "
            f"times){why}"
        )

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
