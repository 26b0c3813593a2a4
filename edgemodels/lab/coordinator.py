"""The labgrid coordinator as edgemodels talks to it: one client session on its own event loop.

Built on labgrid's Python client (labgrid.remote.client.ClientSession, the session labgrid's own RemotePlace resource
uses): places and resources arrive as objects, gRPC status codes tell the failures apart, and one connection serves
a whole bench session. What is asked of it (places, a place's NetworkService, reservations, acquire, release) is
edgemodels.lab's business; this module only keeps the session usable (timeouts, a reconnect, quiet logging).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator

from edgemodels.run.targets import RemoteError

RPC_TIMEOUT_S = 15.0
SCHEME = "labgrid://"
INSTALL = "pip install '.[lab]' (labgrid) in this workstation's edgemodels checkout"

_URL_RE = re.compile(r"^labgrid://(?P<place>[A-Za-z0-9_.:+-]+)(?:/(?P<resource>[A-Za-z0-9_.-]+))?/?$")


class LabError(RemoteError):
    """A place cannot be used: unknown, busy past --lab-wait, without a NetworkService, or no coordinator."""


@dataclass(frozen=True)
class PlaceURL:
    """labgrid://PLACE[/RESOURCE]: RESOURCE names the NetworkService where a place has several."""

    place: str
    resource: str | None = None

    @classmethod
    def parse(cls, url: str) -> "PlaceURL":
        m = _URL_RE.match(url.strip())
        if not m:
            raise LabError(f"--remote {url!r}: expected labgrid://PLACE (or labgrid://PLACE/RESOURCE), e.g. "
                           "labgrid://pi4-lab1")
        return cls(m.group("place"), m.group("resource"))


@dataclass(frozen=True)
class Board:
    """What a place's NetworkService says about its board, and where that came from."""

    place: str
    address: str
    port: int
    username: str
    resource: str  # exporter/group/NetworkService/name
    tags: dict = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.address if self.port == 22 else f"{self.address}:{self.port}"


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """labgrid's client logs to the root logger ("coordinator is unavailable"); with no handler there Python prints
    it to stderr, beside our one-line error. A NullHandler for the duration keeps the error the only line."""
    root = logging.getLogger()
    handler = None if root.handlers else logging.NullHandler()
    if handler is not None:
        root.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            root.removeHandler(handler)


_CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 7500), ("grpc.keepalive_timeout_ms", 10000),
                    ("grpc.http2.ping_timeout_ms", 10000), ("grpc.http2.max_pings_without_data", 0)]
"""labgrid's own client channel options (labgrid.remote.client.ClientSession), kept."""


class Coordinator:
    """One labgrid client session on its own event loop: places, resources, reservations, acquire/release."""

    def __init__(self, address: str, timeout_s: float = RPC_TIMEOUT_S):
        try:
            from labgrid.remote import client as lg_client
            from labgrid.remote.generated import labgrid_coordinator_pb2 as pb
            from labgrid.util.proxy import proxymanager
        except ImportError:
            raise LabError(f"labgrid:// needs labgrid on this workstation: {INSTALL}") from None
        self.address, self.timeout_s, self.pb, self._client = address, timeout_s, pb, lg_client
        self._grpc_address = proxymanager.get_grpc_address(address, default_port=20408)
        self.loop = asyncio.new_event_loop()
        self.session = None
        self._connect()

    def _connect(self) -> None:
        async def start():
            import grpc
            from labgrid.remote.generated.labgrid_coordinator_pb2_grpc import CoordinatorStub

            session = self._client.ClientSession(self._grpc_address, self.loop)  # its channel binds to this loop
            # The coordinator tells clients apart by connection; grpc shares one between equal channels of a
            # process. A private subchannel pool keeps two sessions of one process (a test's, a waiting lock's) apart.
            await session.channel.close()
            session.channel = grpc.aio.insecure_channel(self._grpc_address, options=[
                *_CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)])
            session.stub = CoordinatorStub(session.channel)
            await session.start()
            return session

        self._stop_session()
        try:
            with _quiet_root_logger():
                self.session = self.loop.run_until_complete(asyncio.wait_for(start(), self.timeout_s))
        except (asyncio.TimeoutError, self._client.Error, OSError) as exc:
            self.session = None
            why = str(exc).removeprefix("Error: ") or f"no answer within {self.timeout_s:g} s"
            raise LabError(f"labgrid coordinator {self.address} is not reachable ({why}); start labgrid-coordinator "
                           "there, or pass --lg-coordinator HOST:PORT (or set LG_COORDINATOR)") from None

    def call(self, method: str, request, *, expect: tuple = ()):
        """One coordinator RPC (reconnecting first if the stream dropped). A gRPC error whose status is in `expect`
        is the caller's to read; any other, or no answer, is a LabError naming the call."""
        import grpc

        if self.session is None or self.session.stopping.is_set():
            self._connect()

        async def rpc():  # made inside the running loop: grpc binds a call to the loop current at its creation
            return await getattr(self.session.stub, method)(request)

        try:
            with _quiet_root_logger():
                return self.loop.run_until_complete(asyncio.wait_for(rpc(), self.timeout_s))
        except asyncio.TimeoutError:
            raise LabError(f"labgrid coordinator {self.address}: no answer to {method} within {self.timeout_s:g} s")\
                from None
        except grpc.aio.AioRpcError as exc:
            if exc.code() in expect:
                raise
            raise LabError(f"labgrid coordinator {self.address}: {method} failed ({exc.code().name}: "
                           f"{exc.details()})") from None

    def sync(self):
        """Bring places and resources up to date (the coordinator's updates are read while the loop runs)."""
        if self.session is None or self.session.stopping.is_set():
            self._connect()
        with _quiet_root_logger():
            if not self.loop.run_until_complete(asyncio.wait_for(self.session.sync_with_coordinator(),
                                                                 self.timeout_s)):
                self._connect()
        return self.session

    def place(self, name: str):
        places = self.sync().places
        if name not in places:
            known = ", ".join(sorted(places)) or "none"
            raise LabError(f"labgrid place {name!r} is not known to the coordinator {self.address} (its places: "
                           f"{known}); create it: labgrid-client -p {name} create && labgrid-client -p {name} "
                           "add-match EXPORTER/GROUP/NetworkService")
        return places[name]

    def board(self, url: PlaceURL) -> Board:
        """The place's NetworkService (address, port, username) from the exporters' resources it matches."""
        place = self.place(url.place)
        found = []
        for exporter, groups in sorted(self.session.resources.items()):
            for group, resources in sorted(groups.items()):
                for name, res in sorted(resources.items()):
                    match = place.getmatch((exporter, group, res.cls, name))
                    if match is None or res.cls != "NetworkService":
                        continue
                    found.append((match.rename or name, f"{exporter}/{group}/{res.cls}/{name}", res))
        if url.resource:
            found = [f for f in found if url.resource in (f[0], f[1].rsplit("/", 1)[1])]
        where = f"labgrid place {url.place!r}"
        if not found:
            matches = ", ".join(str(m) for m in place.matches) or "no matches"
            raise LabError(f"{where} has no NetworkService{f' named {url.resource!r}' if url.resource else ''} "
                           f"(its matches: {matches}); export one for the board (docs/lab.md) and check the exporter "
                           "runs: labgrid-client resources")
        if len(found) > 1:
            raise LabError(f"{where} has {len(found)} NetworkService resources ({', '.join(f[1] for f in found)}); "
                           f"name one: labgrid://{url.place}/NAME")
        _, path, res = found[0]
        params = res.params
        if params.get("extra", {}).get("proxy_required"):
            raise LabError(f"{where}: {path} is reachable only through its exporter host "
                           f"{params['extra'].get('proxy')} (exporter started with --isolated); run the exporter "
                           "without --isolated, or route the board's address to this workstation")
        if not res.avail:
            raise LabError(f"{where}: {path} is exported but not available; check the exporter's log")
        return Board(url.place, str(params["address"]), int(params.get("port") or 22), str(params["username"]),
                     path, dict(place.tags))

    def holder(self, name: str) -> str | None:
        """Who keeps a place from us: its lock holder, or the owner of a reservation it is allocated to."""
        place = self.place(name)
        if place.acquired:
            since = datetime.fromtimestamp(place.changed).strftime("%Y-%m-%d %H:%M:%S")
            return f"{place.acquired} (since {since})"
        if place.reservation:
            try:
                res = self.call("GetReservations", self.pb.GetReservationsRequest())
                owner = next((r.owner for r in res.reservations if r.token == place.reservation), "?")
            except Exception:  # noqa: BLE001 - only for the message
                owner = "?"
            return f"a reservation of {owner} (token {place.reservation})"
        return None

    def _stop_session(self) -> None:
        if self.session is None:
            return
        with _quiet_root_logger(), contextlib.suppress(Exception):
            self.loop.run_until_complete(asyncio.wait_for(self.session.stop(), 5))
            self.loop.run_until_complete(asyncio.wait_for(self.session.close(), 5))
        self.session = None

    def close(self) -> None:
        self._stop_session()
        if not self.loop.is_closed():
            self.loop.close()
