"""Image records: create, show, list, update, delete, members; visibility and quotas.
The data path (upload, download, garbage collection) is in images/data.py."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, Text, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from infracloud.core.clock import Clock
from infracloud.core.context import Caller
from infracloud.core.durations import IMAGE_KEY, parse_duration
from infracloud.core.errors import BadRequest, Conflict, Forbidden, NotFound, OverLimit
from infracloud.core.settings import ImagesConfig
from infracloud.core.states import IMAGE
from infracloud.images.filters import Filters
from infracloud.store import Database
from infracloud.store.models import Image, ImageMember

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso",
                "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("public", "community", "shared", "private")
BASE_FIELDS = ("name", "visibility", "protected", "os_hidden", "disk_format",
               "container_format", "min_disk", "min_ram", "tags")
READ_ONLY = frozenset({"status", "checksum", "os_hash_algo", "os_hash_value", "size",
                       "virtual_size", "created_at", "updated_at", "file", "self", "schema",
                       "direct_url", "locations", "stores", "id"})
RESERVED = frozenset({"location", "deleted", "deleted_at"})
RESERVED_PREFIX = "os_glance_"  # Glance keeps this namespace for itself
MAX_PROPERTIES = 128
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.:\[\]$ -]+")  # property names JSON paths name safely
SORT_KEYS = ("created_at", "updated_at", "name", "size", "status", "id")
MEMBER_STATUSES = ("pending", "accepted", "rejected")


@dataclass
class ListQuery:
    filters: Filters = field(default_factory=Filters)  # images/filters.py
    limit: int = 200
    marker: str | None = None
    sort_key: str = "created_at"
    sort_dir: str = "desc"


class ImageService:
    def __init__(self, db: Database, config: ImagesConfig, clock: Clock) -> None:
        self.db = db
        self.config = config
        self.clock = clock

    # ---- create / read -------------------------------------------------------------------

    def create(self, caller: Caller, body: dict[str, Any]) -> Image:
        if caller.project_id is None:
            raise Forbidden("Creating an image needs a project-scoped token.")
        body = dict(body)
        image_id = body.pop("id", None) or str(uuid.uuid4())
        owner = body.pop("owner", None) or caller.project_id
        if owner != caller.project_id and not caller.is_admin:
            raise Forbidden("You are not permitted to create images owned by another project.")
        self._check_id(image_id)
        values, props = self._split(body, creating=True)
        if values.get("visibility") == "public" and not caller.is_admin:
            raise Forbidden('You are not authorized to set "visibility" to "public".')
        now = self.clock.now()
        with self.db.write() as s:
            if s.get(Image, image_id) is not None:
                raise Conflict(f"An image with identifier {image_id} already exists")
            limit = self.config.quota.images
            if limit >= 0 and self._count(s, owner) >= limit:
                raise OverLimit(f"Quota exceeded for images: project {owner} already has "
                                f"{limit} of {limit} images.")
            image = Image(id=image_id, owner=owner, status="queued", properties=props,
                          created_at=now, updated_at=now, **values)
            s.add(image)
        return image

    def get(self, caller: Caller, image_id: str) -> Image:
        with self.db.read() as s:
            return self._visible(s, caller, image_id)

    def list_images(self, caller: Caller, q: ListQuery) -> tuple[list[Image], str | None]:
        """A page of images and the marker of the next page (None on the last page)."""
        if q.sort_key not in SORT_KEYS:
            raise BadRequest(f"Invalid sort key: {q.sort_key}. Sort keys: {', '.join(SORT_KEYS)}")
        if q.sort_dir not in ("asc", "desc"):
            raise BadRequest(f"Invalid sort direction: {q.sort_dir}")
        with self.db.read() as s:
            stmt = self._list_query(caller, q)
            if q.marker:
                stmt = self._after(s, caller, stmt, q)
            rows = list(s.scalars(stmt.limit(q.limit + 1)))
        more = len(rows) > q.limit
        rows = rows[:q.limit]
        return rows, (rows[-1].id if more and rows else None)

    # ---- update / delete -----------------------------------------------------------------

    def update(self, caller: Caller, image_id: str, changes: dict[str, Any],
               removed: list[str]) -> Image:
        """Apply a parsed JSON patch: `changes` sets fields and properties, `removed` drops
        properties."""
        for key in removed:
            _check_reserved(key)
            if key in READ_ONLY or key in BASE_FIELDS or key == "owner":
                raise Forbidden(f"Attribute '{key}' is read-only or reserved.")
        values, props = self._split(dict(changes), creating=False)
        if "owner" in changes and not caller.is_admin:
            raise Forbidden("Attribute 'owner' is reserved.")
        if values.get("visibility") == "public" and not caller.is_admin:
            raise Forbidden('You are not authorized to set "visibility" to "public".')
        with self.db.write() as s:
            image = self.modifiable(s, caller, image_id)
            for key in ("disk_format", "container_format"):
                if key in values and image.status != "queued" and values[key] != getattr(
                        image, key):
                    raise Forbidden(f"Attribute {key} can be only replaced for a queued image.")
            for key, value in values.items():
                setattr(image, key, value)
            if "owner" in changes:
                image.owner = str(changes["owner"])
            merged = dict(image.properties or {})
            for key in removed:
                if key not in merged:
                    raise Conflict(f"Property {key} does not exist.")
                merged.pop(key)
            merged.update(props)
            if len(merged) > MAX_PROPERTIES:
                raise OverLimit(f"Maximum number of image properties ({MAX_PROPERTIES}) "
                                f"exceeded.")
            image.properties = merged
            image.updated_at = self.clock.now()
        return image

    def delete(self, caller: Caller, image_id: str) -> Image:
        """Remove the record. The data goes with the next garbage collection."""
        with self.db.write() as s:
            image = self.modifiable(s, caller, image_id)
            if image.protected:
                raise Forbidden(f"Image {image_id} is protected and cannot be deleted.")
            IMAGE.next(image.status, "delete")
            s.delete(image)
        return image

    def set_status(self, caller: Caller, image_id: str, event: str) -> Image:
        """deactivate / reactivate, by the owner or an admin (Glance's default policy). As
        in Glance, repeating one does nothing, and an image in another status answers 403."""
        done = "deactivated" if event == "deactivate" else "active"
        with self.db.write() as s:
            image = self.modifiable(s, caller, image_id)
            if image.status != done:
                if not IMAGE.allows(image.status, event):
                    raise Forbidden(f"Not allowed to {event} image in status "
                                    f"'{image.status}'")
                image.status = IMAGE.next(image.status, event)
                image.updated_at = self.clock.now()
        return image

    def add_tag(self, caller: Caller, image_id: str, tag: str) -> None:
        with self.db.write() as s:
            image = self.modifiable(s, caller, image_id)
            if tag not in image.tags:
                image.tags = [*image.tags, tag]
                image.updated_at = self.clock.now()

    def remove_tag(self, caller: Caller, image_id: str, tag: str) -> None:
        with self.db.write() as s:
            image = self.modifiable(s, caller, image_id)
            if tag not in image.tags:
                raise NotFound(f"Tag {tag} not found on image {image_id}.")
            image.tags = [t for t in image.tags if t != tag]
            image.updated_at = self.clock.now()

    # ---- members (visibility "shared") ---------------------------------------------------

    def members(self, caller: Caller, image_id: str) -> list[ImageMember]:
        with self.db.read() as s:
            image = self._visible(s, caller, image_id)
            q = select(ImageMember).where(ImageMember.image_id == image.id)
            if not (caller.is_admin or image.owner == caller.project_id):
                q = q.where(ImageMember.member_id == caller.project_id)
            return list(s.scalars(q.order_by(ImageMember.created_at)))

    def add_member(self, caller: Caller, image_id: str, member_id: str) -> ImageMember:
        with self.db.write() as s:
            image = self.modifiable(s, caller, image_id)
            if image.visibility != "shared":
                raise Forbidden(f"Image {image_id} is not shared (visibility "
                                f"'{image.visibility}'); members cannot be added.")
            if s.get(ImageMember, (image_id, member_id)) is not None:
                raise Conflict(f"Member {member_id} already exists on image {image_id}.")
            now = self.clock.now()
            member = ImageMember(image_id=image_id, member_id=member_id, status="pending",
                                 created_at=now, updated_at=now)
            s.add(member)
        return member

    def get_member(self, caller: Caller, image_id: str, member_id: str) -> ImageMember:
        for m in self.members(caller, image_id):
            if m.member_id == member_id:
                return m
        raise NotFound(f"Member {member_id} not found on image {image_id}.")

    def set_member_status(self, caller: Caller, image_id: str, member_id: str,
                          status: str) -> ImageMember:
        if status not in MEMBER_STATUSES:
            raise BadRequest(f"Invalid member status: {status}")
        if member_id != caller.project_id and not caller.is_admin:
            raise Forbidden("Only the member itself can accept or reject an image.")
        with self.db.write() as s:
            member = s.get(ImageMember, (image_id, member_id))
            if member is None:
                raise NotFound(f"Member {member_id} not found on image {image_id}.")
            member.status = status
            member.updated_at = self.clock.now()
        return member

    def remove_member(self, caller: Caller, image_id: str, member_id: str) -> None:
        with self.db.write() as s:
            self.modifiable(s, caller, image_id)
            member = s.get(ImageMember, (image_id, member_id))
            if member is None:
                raise NotFound(f"Member {member_id} not found on image {image_id}.")
            s.delete(member)

    # ---- quotas --------------------------------------------------------------------------

    def usage(self, project_id: str) -> tuple[int, int]:
        """(image count, bytes of stored data) of a project."""
        with self.db.read() as s:
            return self._count(s, project_id), self.stored_bytes(s, project_id)

    @staticmethod
    def _count(s: Session, owner: str) -> int:
        return int(s.scalar(select(func.count()).select_from(Image)
                            .where(Image.owner == owner)) or 0)

    @staticmethod
    def stored_bytes(s: Session, owner: str) -> int:
        return int(s.scalar(select(func.coalesce(func.sum(Image.size), 0))
                            .where(Image.owner == owner, Image.size.is_not(None))) or 0)

    # ---- helpers -------------------------------------------------------------------------

    @staticmethod
    def _check_id(image_id: Any) -> None:
        try:
            uuid.UUID(str(image_id))
        except ValueError:
            raise BadRequest(f"Invalid image id: {image_id!r} is not a UUID.") from None

    def _split(self, body: dict[str, Any], creating: bool) -> tuple[dict[str, Any],
                                                                    dict[str, str]]:
        """Separate base fields (checked) from extra properties (strings)."""
        values: dict[str, Any] = {}
        props: dict[str, str] = {}
        body.pop("owner", None)
        for key, value in body.items():
            if key in READ_ONLY:
                raise Forbidden(f"Attribute '{key}' is read-only.")
            _check_reserved(key)
            if key in BASE_FIELDS:
                values[key] = self._base_value(key, value)
            else:
                if not isinstance(value, str):
                    raise BadRequest(f"Property {key} must be a string, not "
                                     f"{type(value).__name__}.")
                if not key or len(key) > 255 or len(value) > 65535:
                    raise BadRequest(f"Property {key[:40]!r} has an invalid name or value.")
                if key == IMAGE_KEY:  # servers' maximum lifetime (compute/lifetimes.py)
                    parse_duration(value, IMAGE_KEY)
                props[key] = value
        if creating and len(props) > MAX_PROPERTIES:
            raise OverLimit(f"Maximum number of image properties ({MAX_PROPERTIES}) exceeded.")
        return values, props

    @staticmethod
    def _base_value(key: str, value: Any) -> Any:
        def bad(what: str) -> BadRequest:
            return BadRequest(f"Invalid value for '{key}': {value!r} ({what}).")

        if key == "name":
            if value is not None and (not isinstance(value, str) or len(value) > 255):
                raise bad("a string of at most 255 characters")
            return value
        if key == "visibility":
            if value not in VISIBILITIES:
                raise bad("one of " + ", ".join(VISIBILITIES))
            return value
        if key in ("protected", "os_hidden"):
            if not isinstance(value, bool):
                raise bad("true or false")
            return value
        if key == "disk_format":
            if value is not None and value not in DISK_FORMATS:
                raise bad("one of " + ", ".join(DISK_FORMATS))
            return value
        if key == "container_format":
            if value is not None and value not in CONTAINER_FORMATS:
                raise bad("one of " + ", ".join(CONTAINER_FORMATS))
            return value
        if key in ("min_disk", "min_ram"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad("a whole number of at least 0")
            return value
        if key == "tags":
            if not isinstance(value, list) or not all(isinstance(t, str) and 0 < len(t) <= 255
                                                      for t in value):
                raise bad("a list of strings")
            return list(dict.fromkeys(value))
        raise bad("unknown field")

    def _visible(self, s: Session, caller: Caller, image_id: str) -> Image:
        image = s.get(Image, image_id)
        if image is None or not self._can_see(s, caller, image):
            raise NotFound(f"No image found with ID {image_id}")
        return image

    @staticmethod
    def _can_see(s: Session, caller: Caller, image: Image) -> bool:
        if caller.is_admin or image.owner == caller.project_id:
            return True
        if image.visibility in ("public", "community"):
            return True
        if image.visibility == "shared" and caller.project_id:
            return s.get(ImageMember, (image.id, caller.project_id)) is not None
        return False

    def modifiable(self, s: Session, caller: Caller, image_id: str) -> Image:
        image = self._visible(s, caller, image_id)
        if not caller.is_admin and image.owner != caller.project_id:
            raise Forbidden(f"You are not permitted to modify image {image_id}.")
        return image

    def _list_query(self, caller: Caller, q: ListQuery) -> Select[Any]:
        stmt = select(Image)
        f = q.filters
        pid = caller.project_id
        membership = select(ImageMember.image_id).where(ImageMember.member_id == pid)
        if f.member_status is not None:
            membership = membership.where(ImageMember.status == f.member_status)
        if f.visibility is not None:
            stmt = stmt.where(Image.visibility == f.visibility)
        if not caller.is_admin:
            seen = [Image.owner == pid, Image.visibility == "public",
                    and_(Image.visibility == "shared", Image.id.in_(membership))]
            if f.visibility == "community":
                seen.append(Image.visibility == "community")
            stmt = stmt.where(or_(*seen))
        for attr, values in f.lists.items():
            stmt = stmt.where(getattr(Image, attr).in_(values))
        for attr, value in f.equal.items():
            stmt = stmt.where(getattr(Image, attr) == value)
        for attr, op, when in f.times:
            stmt = stmt.where(_compare(getattr(Image, attr), op, when))
        stmt = stmt.where(Image.os_hidden == f.os_hidden)
        if f.size_min is not None:
            stmt = stmt.where(Image.size >= f.size_min)
        if f.size_max is not None:
            stmt = stmt.where(Image.size <= f.size_max)
        for tag in f.tags:  # matched in the JSON text, encoded as the column encodes it
            stmt = stmt.where(cast(Image.tags, Text).like(f"%{_like(json.dumps(tag))}%",
                                                          escape="\\"))
        for key, value in f.properties.items():
            if _PLAIN_KEY.fullmatch(key):
                stmt = stmt.where(Image.properties[key].as_string() == value)
            else:  # a JSON path cannot name it in every database: match the JSON text
                pair = f"{json.dumps(key)}: {json.dumps(value)}"
                stmt = stmt.where(cast(Image.properties, Text).like(f"%{_like(pair)}%",
                                                                    escape="\\"))
        key = self._sort_column(q.sort_key)
        order = (key.desc(), Image.id.desc()) if q.sort_dir == "desc" else (key.asc(),
                                                                           Image.id.asc())
        return stmt.order_by(*order)

    @staticmethod
    def _sort_column(key: str) -> Any:
        col = getattr(Image, key)
        if key == "name":
            return func.coalesce(col, "")
        if key == "size":
            return func.coalesce(col, -1)
        return col

    def _after(self, s: Session, caller: Caller, stmt: Select[Any],
               q: ListQuery) -> Select[Any]:
        marker = s.get(Image, q.marker)
        if marker is None or not self._can_see(s, caller, marker):
            raise BadRequest(f"Invalid marker {q.marker}. Image could not be found.")
        key = self._sort_column(q.sort_key)
        value = getattr(marker, q.sort_key)
        if q.sort_key == "name":
            value = value or ""
        elif q.sort_key == "size":
            value = -1 if value is None else value
        if q.sort_dir == "desc":
            return stmt.where(or_(key < value, and_(key == value, Image.id < marker.id)))
        return stmt.where(or_(key > value, and_(key == value, Image.id > marker.id)))


def _compare(column: Any, op: str, value: Any) -> Any:
    return {"gt": column > value, "gte": column >= value, "lt": column < value,
            "lte": column <= value, "neq": column != value}.get(op, column == value)


def _check_reserved(key: str) -> None:
    if key in RESERVED or key.startswith(RESERVED_PREFIX):
        raise Forbidden(f"Attribute '{key}' is reserved.")


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
