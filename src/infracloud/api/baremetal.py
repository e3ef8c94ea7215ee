"""Bare Metal v1 subset (Ironic's API as `openstack baremetal` and openstacksdk's baremetal
proxy send it): nodes (create, list, show, patch, delete), provision verbs, power, maintenance,
validate, drivers. Administrators only. Microversions 1.1 to MAX_VERSION are accepted; a
request for more answers 406 with the range, which is how the clients negotiate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response

from infracloud.api.baremetal_models import (
    MaintenanceIn,
    NodeIn,
    PatchBody,
    PatchOp,
    ProvisionIn,
    Target,
    check_value,
)
from infracloud.api.baremetal_views import (
    LIST_FIELDS,
    MAX_VERSION,
    MIN_VERSION,
    node_view,
    root_doc,
    states_view,
    v1_doc,
)
from infracloud.api.bodies import JSONRoute
from infracloud.api.deps import ServicesDep, next_query, parse_bool, policy
from infracloud.core.errors import BadRequest, NotAcceptable
from infracloud.hardware.bmc import DRIVERS
from infracloud.hardware.nodes import NodeQuery
from infracloud.site.services import Services

router = APIRouter(prefix="/baremetal", route_class=JSONRoute)
VERSION_HEADER = "X-OpenStack-Ironic-API-Version"
MAX_LIMIT = 1000


def _v(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def _range_headers(version: str) -> dict[str, str]:
    return {"X-OpenStack-Ironic-API-Minimum-Version": MIN_VERSION,
            "X-OpenStack-Ironic-API-Maximum-Version": MAX_VERSION,
            VERSION_HEADER: version, "OpenStack-API-Version": f"baremetal {version}",
            "Vary": VERSION_HEADER}


def microversion(response: Response, x_openstack_ironic_api_version: Annotated[
        str | None, Header()] = None, openstack_api_version: Annotated[
        str | None, Header()] = None) -> str:
    asked = x_openstack_ironic_api_version
    if asked is None and openstack_api_version and \
            openstack_api_version.startswith("baremetal "):
        asked = openstack_api_version.split(" ", 1)[1]
    if asked is None:
        version = MIN_VERSION
    elif asked.strip().lower() == "latest":
        version = MAX_VERSION
    else:
        try:
            wanted = _v(asked.strip())
        except ValueError:
            raise BadRequest(f"Invalid value for {VERSION_HEADER} header: {asked}") from None
        if not _v(MIN_VERSION) <= wanted <= _v(MAX_VERSION):
            raise NotAcceptable(
                f"Version {asked} was requested but the minor version is not supported by "
                f"this service. The supported version range is: [{MIN_VERSION}, "
                f"{MAX_VERSION}].", headers=_range_headers(MAX_VERSION))
        version = asked.strip()
    response.headers.update(_range_headers(version))
    return version


VersionDep = Annotated[str, Depends(microversion)]
v1 = APIRouter(prefix="/v1", dependencies=[Depends(microversion)])
nodes_api = APIRouter(prefix="/nodes", dependencies=[policy("baremetal:node")],
                      route_class=JSONRoute)


@router.get("")
@router.get("/")
def root(services: ServicesDep, _: VersionDep) -> dict[str, Any]:
    return root_doc(services.base_url)


@v1.get("")
@v1.get("/")
def version_one(services: ServicesDep) -> dict[str, Any]:
    return v1_doc(services.base_url)


@v1.get("/drivers", dependencies=[policy("baremetal:driver:get")])
def drivers(services: ServicesDep) -> dict[str, Any]:
    base = services.base_url
    return {"drivers": [{"name": d, "hosts": [services.config.controller_id or "controller"],
                         "type": "dynamic", "links": [
                             {"href": f"{base}/baremetal/v1/drivers/{d}", "rel": "self"}]}
                        for d in DRIVERS]}


def _fields(request: Request) -> set[str] | None:
    raw = request.query_params.get("fields")
    return {f.strip() for f in raw.split(",") if f.strip()} if raw else None


def _list(services: Services, request: Request, detail: bool) -> dict[str, Any]:
    q = request.query_params
    try:
        limit = min(int(q["limit"]), MAX_LIMIT) if q.get("limit") else None
    except ValueError:
        raise BadRequest(f"Invalid limit: {q.get('limit')}") from None
    if limit is not None and limit < 0:
        raise BadRequest("Limit must be positive")
    query = NodeQuery(provision_state=q.get("provision_state"),
                      maintenance=parse_bool(q.get("maintenance")), driver=q.get("driver"),
                      fault=q.get("fault"), role=q.get("role"), limit=limit,
                      marker=q.get("marker"))
    rows, marker = services.nodes.list_nodes(query)
    fields = _fields(request)
    if fields is None and not (detail or parse_bool(q.get("detail"))):
        fields = set(LIST_FIELDS)
    base = services.base_url
    out: dict[str, Any] = {"nodes": [node_view(n, base, fields) for n in rows]}
    if marker and limit:
        out["next"] = f"{base}/baremetal/v1/nodes?{next_query(request, marker, limit)}"
    return out


@nodes_api.get("")
def list_nodes(services: ServicesDep, request: Request) -> dict[str, Any]:
    return _list(services, request, detail=False)


@nodes_api.get("/detail")
def list_nodes_detail(services: ServicesDep, request: Request) -> dict[str, Any]:
    return _list(services, request, detail=True)


@nodes_api.post("", status_code=201)
def create_node(services: ServicesDep, body: NodeIn) -> dict[str, Any]:
    return node_view(services.nodes.create(body.model_dump(exclude_unset=True)),
                     services.base_url)


@nodes_api.get("/{ident}")
def show_node(services: ServicesDep, ident: str, request: Request) -> dict[str, Any]:
    return node_view(services.nodes.get(ident), services.base_url, _fields(request))


def _patch(ops: list[PatchOp]) -> tuple[dict[Any, Any], list[Any]]:
    changes: dict[Any, Any] = {}
    removed: list[Any] = []
    for op in ops:
        parts = op.path.strip("/").split("/", 1)
        key: Any = parts[0] if len(parts) == 1 else (parts[0], parts[1])
        if op.op in ("add", "replace"):
            if "value" not in op.model_fields_set:
                raise BadRequest(f"'{op.op}' on {op.path} needs a 'value'.")
            if len(parts) == 1:
                check_value(parts[0], op.value)
            changes[key] = op.value
        else:
            removed.append(key)
    return changes, removed


@nodes_api.patch("/{ident}")
def update_node(services: ServicesDep, ident: str, body: PatchBody) -> dict[str, Any]:
    changes, removed = _patch(body)
    return node_view(services.nodes.update(ident, changes, removed), services.base_url)


@nodes_api.delete("/{ident}", status_code=204)
def delete_node(services: ServicesDep, ident: str) -> Response:
    services.nodes.delete(ident)
    return Response(status_code=204)


@nodes_api.get("/{ident}/states")
def node_states(services: ServicesDep, ident: str) -> dict[str, Any]:
    return states_view(services.nodes.get(ident))


@nodes_api.put("/{ident}/states/power", status_code=202)
def set_power(services: ServicesDep, ident: str, body: Target) -> None:
    services.nodes.power(ident, body.target)


@nodes_api.put("/{ident}/states/provision", status_code=202)
def set_provision(services: ServicesDep, ident: str, body: ProvisionIn) -> None:
    services.nodes.provision(ident, body.target, evict=body.evict)


@nodes_api.put("/{ident}/maintenance", status_code=202)
def maintenance_on(services: ServicesDep, ident: str, body: MaintenanceIn | None = None
                   ) -> None:
    services.nodes.set_maintenance(ident, True, body.reason if body else None)


@nodes_api.delete("/{ident}/maintenance", status_code=202)
def maintenance_off(services: ServicesDep, ident: str) -> None:
    services.nodes.set_maintenance(ident, False)


@nodes_api.get("/{ident}/validate")
def validate(services: ServicesDep, ident: str) -> dict[str, Any]:
    node = services.nodes.get(ident)
    address = services.nodes.access(node).address
    missing = [] if address and (node.bmc_password or node.driver == "fake") \
        else ["BMC address and password"]
    bmc = {"result": not missing,
           "reason": f"Missing {', '.join(missing)} in driver_info" if missing else None}
    ok = {"result": True, "reason": None}
    off = {"result": None, "reason": "not supported"}
    return {"power": bmc, "management": bmc, "boot": bmc, "deploy": bmc, "inspect": bmc,
            "console": off, "raid": off, "rescue": off, "bios": off, "network": ok,
            "storage": ok}


v1.include_router(nodes_api)
router.include_router(v1)
