"""The interoperable image import, as Glance offers it with the `glance-direct` method only.

`PUT /v2/images/{id}/stage` streams the data into the staging area (images/data.py, through
the upload's pipeline, with its size and quota limits; the image is then `uploading`);
`POST /v2/images/{id}/import` answers 202 and, on this controller's image I/O threads, reads
the staged data once for its md5 and sha512 (the stage computes none), moves it into the
store under its key and makes the image `active` (`importing` meanwhile). An import that
fails leaves the image `killed`, as a failed upload does; a controller that stops mid-import
leaves it to `ImageData.recover()`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from infracloud.core.context import Caller
from infracloud.core.errors import BadRequest, Conflict
from infracloud.core.states import IMAGE
from infracloud.images.data import HASH_ALGO, HEARTBEAT_SECONDS, ImageData
from infracloud.store.models import Image

log = logging.getLogger(__name__)

IMPORT_METHODS = ("glance-direct",)
# the methods Glance knows; asked for here, they answer that this site does not offer them
KNOWN_METHODS = ("glance-direct", "web-download", "copy-image", "glance-download")


def import_info() -> dict[str, Any]:
    """GET /v2/info/import, in Glance's shape."""
    return {"import-methods": {"description": "Import methods available.", "type": "array",
                               "value": list(IMPORT_METHODS)}}


def check_body(body: Any) -> str:
    """The import method a POST .../import body asks for (Glance's checks and wording)."""
    if not isinstance(body, dict):
        raise BadRequest("Import request requires a JSON object body.")
    method = body.get("method")
    if not isinstance(method, dict):
        raise BadRequest("Import request requires a 'method' field.")
    name = method.get("name")
    if not isinstance(name, str):
        raise BadRequest("Import request requires a 'name' field.")
    if name not in IMPORT_METHODS:
        known = "" if name in KNOWN_METHODS else "Unknown import method name. "
        raise BadRequest(f"{known}Import method {name[:80]!r} is not supported: this site "
                         f"offers {', '.join(IMPORT_METHODS)} only.")
    for key in ("all_stores", "all_stores_must_succeed"):
        if key in body and not isinstance(body[key], bool):
            raise BadRequest(f"'{key}' must be boolean value only")
    if body.get("stores") or body.get("all_stores"):
        raise BadRequest("Multi backend is not supported at this site: import into the "
                         "default store (no 'stores', no 'all_stores').")
    return name


class ImageImports:
    def __init__(self, data: ImageData) -> None:
        self.data = data

    def start(self, caller: Caller, image_id: str, body: Any) -> None:
        """uploading -> importing; the work goes on after the answer (202)."""
        check_body(body)
        d = self.data
        with d.db.write() as s:
            image = d.images.modifiable(s, caller, image_id)
            if image.status == "active":
                raise Conflict("Image with status active cannot be target for import")
            if image.status != "uploading":
                raise Conflict(f"Image needs to be staged before 'glance-direct' method can "
                               f"be used (its status is {image.status}).")
            if image.upload_owner is not None:
                raise Conflict(f"Image {image_id} is still being staged; import it once "
                               f"the stage has ended.")
            if not image.container_format:
                raise Conflict("'container_format' needs to be set before import")
            if not image.disk_format:
                raise Conflict("'disk_format' needs to be set before import")
            image.status = IMAGE.next(image.status, "import")
            image.upload_owner = d.holder
            image.upload_heartbeat = image.updated_at = d.clock.now()
            expected = image.size
        d.executor.submit(self._run, image_id, expected)

    def _run(self, image_id: str, expected: int | None) -> None:
        try:
            self._import(image_id, expected)
        except Exception as exc:  # the image must not stay `importing`: it failed
            self._end(image_id, "fail")
            log.warning("image import failed", extra={"image_id": image_id,
                                                      "event": "image.import.fail",
                                                      "reason": f"{type(exc).__name__}: {exc}"})

    def _import(self, image_id: str, expected: int | None) -> None:
        d = self.data
        md5, sha = hashlib.md5(), hashlib.sha512()
        size = 0
        beat = time.monotonic()
        # md5 of a block on a helper thread while this one takes its sha512 (hashlib lets go
        # of the GIL): the import runs at the slower hash's speed, not at the two's sum
        with ThreadPoolExecutor(1, thread_name_prefix=f"import-{image_id[:8]}") as side:
            pending: Future[None] | None = None
            for chunk in d.store.read_staged(image_id):
                if d.closed.is_set():
                    return  # the controller stops: its next start kills the import (recover)
                if pending is not None:
                    pending.result()
                pending = side.submit(md5.update, chunk)
                sha.update(chunk)
                size += len(chunk)
                if time.monotonic() - beat > HEARTBEAT_SECONDS:
                    beat = time.monotonic()
                    if not self._heartbeat(image_id):
                        d.store.discard_staged(image_id)
                        return  # deleted, or taken from us: nothing to finish
            if pending is not None:
                pending.result()
        if expected is not None and size != expected:
            raise ValueError(f"staged data has {size} bytes, the stage stored {expected}")
        key = sha.hexdigest()
        d.store.promote(image_id, key)  # unreferenced if the image goes meanwhile: collected
        with d.db.write() as s:
            image = s.get(Image, image_id)
            if image is None or image.status != "importing" or image.upload_owner != d.holder:
                return
            image.status = IMAGE.next("importing", "stored")
            image.upload_owner = None
            image.updated_at = d.clock.now()
            image.size = size
            image.virtual_size = size if image.disk_format == "raw" else None
            image.checksum = md5.hexdigest()
            image.os_hash_algo = HASH_ALGO
            image.os_hash_value = key
        log.info("image imported", extra={"image_id": image_id, "bytes": size,
                                          "event": "image.import.stored"})

    def _heartbeat(self, image_id: str) -> bool:
        d = self.data
        with d.db.write() as s:
            image = s.get(Image, image_id)
            if image is None or image.status != "importing" or image.upload_owner != d.holder:
                return False
            image.upload_heartbeat = d.clock.now()
            return True

    def _end(self, image_id: str, event: str) -> None:
        d = self.data
        d.store.discard_staged(image_id)
        with d.db.write() as s:
            image = s.get(Image, image_id)
            if image is not None and image.status == "importing" and (
                    image.upload_owner == d.holder):
                image.status = IMAGE.next("importing", event)
                image.upload_owner = None
                image.size = None  # no data: nothing to count against the quota
                image.updated_at = d.clock.now()
