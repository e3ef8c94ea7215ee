"""A controller killed in the middle of an image's data: the shared steps of the upload
(`PUT .../file`) and stage (`PUT .../stage`) crash tests."""

from __future__ import annotations

import http.client
import os
from typing import Any

from tests.servers import Running, wait_for

MiB = 1024 * 1024


def kill_mid_put(controller: Running, port: int, conn: Any, image_id: str, what: str,
                 status: str) -> None:
    """Announce 50 MiB to `/image/v2/images/{image_id}/{what}`, send 20, wait until the image
    is `status`, then SIGKILL the controller (no goodbye) and drop the connection."""
    sock = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sock.putrequest("PUT", f"/image/v2/images/{image_id}/{what}")
    sock.putheader("X-Auth-Token", conn.auth_token)
    sock.putheader("Content-Type", "application/octet-stream")
    sock.putheader("Content-Length", str(50 * MiB))
    sock.endheaders()
    sock.send(os.urandom(20 * MiB))
    wait_for(f"the image's data to be under way ({status})",
             lambda: conn.image.get_image(image_id).status == status, every=0.1)
    controller.proc.kill()
    controller.proc.wait()
    sock.close()
