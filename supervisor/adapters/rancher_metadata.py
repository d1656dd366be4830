"""Follow the Rancher 1.x metadata service and hand every changed ``RancherView`` to a callback.

A thin adapter around ``supervisor.core.rancher`` (where the JSON is understood and the decisions are taken). One
daemon thread:

1. reads ``<url>/version``, then ``/self/host``, ``/self/container``, ``/self/service`` (a 404 there is an answer:
   a host-network container usually has no ``self/container`` nor ``self/service``), ``/containers`` and ``/hosts``,
   all with ``Accept: application/json``, and builds the view;
2. calls ``on_change`` when the view differs from the last one delivered (the version alone is no change);
3. long-polls ``<url>/version?wait=true&value=<version>&maxWait=<seconds>``: the service answers as soon as its
   version differs from ``value``, or after ``maxWait`` seconds (1 minute when 0 or absent, at most 2 minutes; it
   re-checks every 5 s, so an answer may come up to 5 s late) with the same version; a new version starts step 1
   again. Reading the version before the objects means a change during step 1 is seen by the next long-poll.

An unreachable or broken service (connection refused, timeout, an HTTP error other than a 404 on ``self/*``, an
answer that is not JSON) makes ``available`` False, is logged once (and its end once), and the round is retried
with exponential backoff (tenacity); the last view stays what it was (``on_change`` is not called). Nothing leaves
the thread: an exception from ``on_change`` is logged and the thread goes on.

Requests never go through a proxy (``HTTP_PROXY`` and friends are ignored: the service is on the local network),
and an answer larger than ``MAX_ANSWER_BYTES`` is refused.

The supervisor runs on the host's network, where the service cannot tell it from the host's other host-network
containers, so pass its own Docker container id (``own_container_id()`` reads it from ``/proc/self/mountinfo``): its
entry in ``/containers`` names the service whose hosts are the peers.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import tenacity

from supervisor.core.rancher import (
    DEFAULT_URL,
    RancherView,
    build_view,
    container_id_from_cgroup,
    container_id_from_mountinfo,
    parse_version,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_URL",
    "MAX_ANSWER_BYTES",
    "MetadataUnavailable",
    "RancherMetadata",
    "fetch_view",
    "own_container_id",
]

MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""The largest answer read (``/containers`` of a big environment is a few MiB)."""

DEFAULT_MAX_WAIT = 60
"""Seconds the service may hold a long-poll (it caps them at 120)."""
LONG_POLL_GRACE = 15.0
"""Seconds a long-poll may last beyond ``maxWait`` before it counts as a timeout (the service re-checks every 5 s)."""
_STABLE_AFTER = 5.0  # a round that failed sooner than this after a success waits retry_initial before the next


class MetadataUnavailable(Exception):
    """The service did not answer, or answered something that is not the metadata service's JSON."""


def _opener() -> urllib.request.OpenerDirector:
    """An opener that never uses a proxy from the environment."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _Client:
    """GETs against one metadata URL (``http://host[:port]/<api version>``), JSON in and out."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ValueError(f"expected an http:// URL of the Rancher metadata service, got {url!r}")
        self.timeout = timeout
        self._opener = _opener()

    def get(self, path: str, *, missing_ok: bool = False, timeout: float | None = None) -> object:
        """The JSON answer to GET <url><path>; None for a 404 when `missing_ok`; MetadataUnavailable otherwise."""
        # The scheme was checked in __init__ (http or https only).
        request = urllib.request.Request(self.url + path, headers={"Accept": "application/json"})  # noqa: S310
        try:
            with self._opener.open(request, timeout=self.timeout if timeout is None else timeout) as response:
                length = response.headers.get("Content-Length", "").strip()
                if length.isdigit() and int(length) > MAX_ANSWER_BYTES:
                    raise MetadataUnavailable(f"GET {path}: answer larger than {MAX_ANSWER_BYTES} bytes")
                # With a length, read() raises IncompleteRead on a short body; without one, read at most the limit.
                body = response.read() if length.isdigit() else response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 404 and missing_ok:
                return None
            raise MetadataUnavailable(f"GET {path}: HTTP {error.code}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            raise MetadataUnavailable(f"GET {path}: {reason}") from None
        if len(body) > MAX_ANSWER_BYTES:
            raise MetadataUnavailable(f"GET {path}: answer larger than {MAX_ANSWER_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise MetadataUnavailable(f"GET {path}: the answer is not JSON") from None

    def version(self) -> str:
        try:
            return parse_version(self.get("/version"))
        except ValueError as error:
            raise MetadataUnavailable(str(error)) from None

    def wait_version(self, current: str, max_wait: int) -> str:
        """Long-poll: the version once it differs from `current`, or `current` after about `max_wait` seconds."""
        query = urllib.parse.urlencode({"wait": "true", "value": current, "maxWait": str(max_wait)})
        value = self.get(f"/version?{query}", timeout=max_wait + LONG_POLL_GRACE)
        try:
            return parse_version(value)
        except ValueError as error:
            raise MetadataUnavailable(str(error)) from None

    def view(self, own_container_id: str | None) -> RancherView:
        """One round: the version first, then every object (a change meanwhile shows in the next long-poll)."""
        version = self.version()
        return build_view(
            version,
            self_host=self.get("/self/host", missing_ok=True),
            self_container=self.get("/self/container", missing_ok=True),
            self_service=self.get("/self/service", missing_ok=True),
            containers=self.get("/containers"),
            hosts=self.get("/hosts"),
            own_container_id=own_container_id,
        )


def fetch_view(url: str = DEFAULT_URL, timeout: float = 5.0, own_container_id: str | None = None) -> RancherView | None:
    """One round of requests (for ``render`` and ``check``): the view, or None when the service cannot be used."""
    try:
        return _Client(url, timeout).view(own_container_id)
    except (MetadataUnavailable, ValueError) as error:
        log.debug("rancher metadata at %s: %s", url, error)
        return None


def own_container_id(proc: Path = Path("/proc/self")) -> str | None:
    """This process's Docker container id (from mountinfo, else cgroup v1), or None outside a container."""
    for name, parse in (("mountinfo", container_id_from_mountinfo), ("cgroup", container_id_from_cgroup)):
        try:
            text = (proc / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        found = parse(text)
        if found is not None:
            return found
    return None


class _Stopping(Exception):
    """Raised out of the retry loop when stop() was called."""


class RancherMetadata:
    """Follows the metadata service at `url` (``http://rancher-metadata/2015-12-19`` in a Rancher 1.x environment).

    ``on_change(view)`` runs on the adapter's thread, one call at a time: first when the first view is read, then
    each time the view differs from the last one delivered. While the service is unreachable ``available`` is
    False and the last view is kept (``view``).
    """

    def __init__(
        self,
        url: str,
        on_change: Callable[[RancherView], None],
        *,
        own_container_id: str | None = None,
        timeout: float = 10.0,
        max_wait: int = DEFAULT_MAX_WAIT,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        unavailable_after: float = 30.0,
    ) -> None:
        if not 1 <= max_wait <= 120:
            raise ValueError("max_wait must be 1 to 120 seconds (the service holds a long-poll at most 2 minutes)")
        self._client = _Client(url, timeout)
        self._on_change = on_change
        self._own_id = own_container_id
        self._max_wait = max_wait
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._unavailable_after = unavailable_after
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._view: RancherView | None = None
        self._available = False
        self._reason = "not read yet"
        self._unavailable_since: tuple[float, float] | None = None  # (monotonic, wall clock)
        self._logged_down = False

    # -- public ----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._client.url

    @property
    def view(self) -> RancherView | None:
        """The last view delivered to ``on_change`` (None before the first)."""
        return self._view

    @property
    def available(self) -> bool:
        """True while the last round of requests succeeded."""
        return self._available

    def start(self) -> None:
        """Start the thread; returns at once, also when the service is unreachable."""
        if self._thread is not None:
            raise RuntimeError("RancherMetadata already started")
        with self._lock:
            self._unavailable_since = (time.monotonic(), time.time())
        self._thread = threading.Thread(target=self._run, name="rancher-metadata", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop following; True when the thread ended within `timeout` seconds.

        A long-poll in flight cannot be cut short: the thread then ends when it returns (at most ``max_wait`` plus
        a few seconds), without calling ``on_change`` again. It is a daemon thread, so it never delays an exit.
        """
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def problem(self) -> str | None:
        """Why the Rancher metadata cannot be used, or None when it can (or was not started, or is stopping).

        A problem: the thread died, or the service has been unreachable for more than `unavailable_after` seconds.
        """
        thread = self._thread
        if thread is None or self._stopping.is_set():
            return None
        if not thread.is_alive():
            return "rancher metadata thread is dead"
        with self._lock:
            since = self._unavailable_since
            reason = self._reason
        if since is None or time.monotonic() - since[0] <= self._unavailable_after:
            return None
        when = datetime.fromtimestamp(since[1]).astimezone().isoformat(timespec="seconds")
        return f"rancher metadata at {self.url} unreachable since {when}: {reason}"

    # -- the thread --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._session()
            except _Stopping:
                return
            except Exception as error:  # never out of the thread: log, back off, go on
                log.exception("rancher metadata: unexpected error; retrying")
                self._unavailable(f"unexpected error: {type(error).__name__}")
                self._stopping.wait(self._retry_max)

    def _session(self) -> None:
        """One connection's life: read the view (retrying with backoff), then follow the version until it fails."""
        view = self._read_with_backoff()
        started = time.monotonic()
        self._reachable()
        self._deliver(view)
        version = view.version
        try:
            while not self._stopping.is_set():
                latest = self._client.wait_version(version, self._max_wait)
                if self._stopping.is_set():
                    return
                if latest == version:
                    continue  # maxWait passed without a change
                view = self._client.view(self._own_id)
                version = view.version
                self._deliver(view)
        except MetadataUnavailable as error:
            if self._stopping.is_set():
                return
            self._unavailable(str(error))
            if time.monotonic() - started < _STABLE_AFTER:
                self._stopping.wait(self._retry_initial)  # a service that answers and fails at once: no busy loop

    def _read_with_backoff(self) -> RancherView:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(MetadataUnavailable),
            wait=tenacity.wait_exponential(
                multiplier=self._retry_initial, min=self._retry_initial, max=self._retry_max
            ),
            stop=tenacity.stop_when_event_set(self._stopping),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            view: RancherView = retrying(self._read)
        except MetadataUnavailable as error:  # only when stopping (the retry never stops otherwise)
            raise _Stopping from error
        return view

    def _read(self) -> RancherView:
        if self._stopping.is_set():
            raise _Stopping
        return self._client.view(self._own_id)

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        self._unavailable(str(error) if error is not None else "unknown error")

    # -- state -------------------------------------------------------------------------------------------------

    def _unavailable(self, reason: str) -> None:
        with self._lock:
            self._available = False
            self._reason = reason
            if self._unavailable_since is None:
                self._unavailable_since = (time.monotonic(), time.time())
            first = not self._logged_down
            self._logged_down = True
        if first:
            log.warning("rancher metadata at %s unreachable (%s); retrying with backoff", self.url, reason)
        else:
            log.debug("rancher metadata at %s still unreachable: %s", self.url, reason)

    def _reachable(self) -> None:
        with self._lock:
            since = self._unavailable_since
            was_down = self._logged_down
            self._available = True
            self._reason = ""
            self._unavailable_since = None
            self._logged_down = False
        if was_down and since is not None:
            log.info("rancher metadata at %s reachable again after %.0f s", self.url, time.monotonic() - since[0])

    def _deliver(self, view: RancherView) -> None:
        if self._stopping.is_set() or view == self._view:
            return
        if self._view is None or view.problems != self._view.problems:
            for line in view.problems:
                log.warning("%s", line)
        self._view = view
        try:
            self._on_change(view)
        except Exception:
            log.exception("rancher metadata: on_change failed for version %s", view.version)
