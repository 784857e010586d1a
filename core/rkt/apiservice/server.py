"""The ``v1alpha.PublicAPI`` service and the gRPC server that carries it.

Every call reads; none writes. Errors are gRPC status codes with a one-line
message: an unknown pod or image is ``NOT_FOUND``, an ambiguous prefix
``INVALID_ARGUMENT``, logs (which rkt does not keep) ``UNIMPLEMENTED``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from rkt import APPC_VERSION, RKT_COMPAT_VERSION
from rkt.apiservice import events, images, pods
from rkt.apiservice.v1alpha import api_pb2 as api
from rkt.apiservice.v1alpha import api_pb2_grpc as api_grpc
from rkt.context import DEFAULT_STORE
from rkt.errors import ImageNotFoundError, PodError, RktError, UsageError
from rkt.pod.dirs import PodStore

if TYPE_CHECKING:
    from rkt.context import Runtime
    from rkt.store import ImageStore

LOG = logging.getLogger(__name__)

DEFAULT_LISTEN = "localhost:15441"
#: the API version rkt 1.x's service reported
API_VERSION = "1.0.0-alpha"
#: concurrent calls; each ListenEvents stream holds one worker while it lasts
MAX_WORKERS = 16


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


class PublicAPI(api_grpc.PublicAPIServicer):  # method names are gRPC's
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.data_dir = runtime.data_dir
        self._local = threading.local()

    @property
    def store(self) -> ImageStore:
        """This worker thread's own handle on the store (its index is SQLite,
        whose connections stay in the thread that opened them)."""
        store: ImageStore | None = getattr(self._local, "store", None)
        if store is None:
            runtime = self.runtime
            store = runtime.plugins.open_store(
                self.data_dir, runtime.config.paths.get("store") or DEFAULT_STORE)
            self._local.store = store
        return store

    def _pods(self) -> PodStore:
        return PodStore(self.data_dir)

    def GetInfo(self, request: api.GetInfoRequest,
                context: grpc.ServicerContext) -> api.GetInfoResponse:
        runtime = self.runtime
        return api.GetInfoResponse(info=api.Info(
            rkt_version=RKT_COMPAT_VERSION, appc_version=APPC_VERSION, api_version=API_VERSION,
            global_flags=api.GlobalFlags(
                dir=str(self.data_dir), system_config_dir=str(runtime.system_config),
                local_config_dir=str(runtime.local_config),
                user_config_dir=str(runtime.user_config or ""),
                insecure_flags=",".join(sorted(runtime.insecure)) or "none",
                trust_keys_from_https=runtime.trust_keys_from_https,
            ),
        ))

    def ListPods(self, request: api.ListPodsRequest,
                 context: grpc.ServicerContext) -> api.ListPodsResponse:
        response = api.ListPodsResponse()
        for pod in self._pods().iter_pods():
            try:
                message = pods.pod_message(pod, detail=request.detail)
            except pods.PodGone:
                continue  # collected while we looked: it is no longer there to list
            if pods.matches_any(message, request.filters):
                response.pods.append(message)
        return response

    def InspectPod(self, request: api.InspectPodRequest,
                   context: grpc.ServicerContext) -> api.InspectPodResponse:
        store = self._pods()
        try:
            pod = pods.find_pod(store.iter_pods(), request.id)
            return api.InspectPodResponse(pod=pods.pod_message(pod, detail=True))
        except pods.PodGone:
            _abort(context, grpc.StatusCode.NOT_FOUND, f'pod "{request.id}" was removed')
        except PodError as exc:
            code = (grpc.StatusCode.INVALID_ARGUMENT if "ambiguous" in str(exc)
                    else grpc.StatusCode.NOT_FOUND)
            _abort(context, code, str(exc))

    def ListImages(self, request: api.ListImagesRequest,
                   context: grpc.ServicerContext) -> api.ListImagesResponse:
        store = self.store
        response = api.ListImagesResponse()
        for info in store.list_images():
            try:
                message = images.image_message(store, info, detail=True)
            except (RktError, OSError, ValueError):
                continue  # removed while we looked
            if images.matches_any(message, request.filters):
                if not request.detail:
                    message.ClearField("manifest")
                response.images.append(message)
        return response

    def InspectImage(self, request: api.InspectImageRequest,
                     context: grpc.ServicerContext) -> api.InspectImageResponse:
        store = self.store
        try:
            info = store.lookup(request.id)
            return api.InspectImageResponse(
                image=images.image_message(store, info, detail=True))
        except ImageNotFoundError as exc:
            code = (grpc.StatusCode.INVALID_ARGUMENT if "ambiguous" in str(exc)
                    else grpc.StatusCode.NOT_FOUND)
            _abort(context, code, str(exc))
        except (RktError, OSError, ValueError) as exc:
            _abort(context, grpc.StatusCode.NOT_FOUND, f'image "{request.id}": {exc}')

    def ListenEvents(self, request: api.ListenEventsRequest,
                     context: grpc.ServicerContext) -> Iterator[api.ListenEventsResponse]:
        import time

        selection = request.filter
        if selection.since_time and selection.since_time < int(time.time()) - 1:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   "since_time is in the past: rkt keeps no event history, "
                   "only what happens while a client listens is streamed")
        yield from events.watch(self.data_dir, self.store, selection,
                                context.is_active)

    def GetLogs(self, request: api.GetLogsRequest,
                context: grpc.ServicerContext) -> Iterator[api.GetLogsResponse]:
        try:
            pod = pods.find_pod(self._pods().iter_pods(), request.pod_id)
        except PodError as exc:
            _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        _abort(context, grpc.StatusCode.UNIMPLEMENTED,
               f'rkt keeps no logs of pod "{pod.uuid}": its apps write to the standard '
               "output and error of the rkt process that runs it (the journal, under systemd)")
        yield api.GetLogsResponse()  # pragma: no cover - a generator for gRPC's sake


class ApiService:
    """A running server: ``port`` is the one bound (useful with port 0)."""

    def __init__(self, server: grpc.Server, port: int, listen: str) -> None:
        self.server = server
        self.port = port
        self.listen = listen
        self.stopped = threading.Event()

    def stop(self, grace: float = 2.0) -> None:
        self.server.stop(grace).wait()
        self.stopped.set()


def start_api_service(runtime: Runtime, listen: str = DEFAULT_LISTEN) -> ApiService:
    """Serve the API on ``listen`` (``HOST:PORT``); :class:`UsageError` if it cannot bind."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise UsageError(f'--listen "{listen}": expected HOST:PORT, e.g. {DEFAULT_LISTEN}')
    options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_WORKERS),
                         options=options)
    api_grpc.add_PublicAPIServicer_to_server(PublicAPI(runtime), server)  # type: ignore[no-untyped-call]
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise UsageError(f'--listen "{listen}": cannot listen there ({exc})') from exc
    if port == 0:
        raise UsageError(f'--listen "{listen}": cannot listen there')
    server.start()
    return ApiService(server, port, f"{host}:{port}")
