"""Two fixes to the OHIF viewer that MONAI Label 0.8.5 serves at ``/ohif/``, applied as it is served.

1. **The MONAI Label panel talks to this server.** The panel connects to the URL in its
   ``MONAILABEL_SERVER_URL`` cookie and, without one, to ``http://127.0.0.1:8000``: with the app on any
   other port or host it talks to the wrong server, or to none. Each OHIF page this app serves sets that
   cookie to the address the browser used to reach it.
2. **"Export DICOM SEG" stores the SEG.** In the bundled OHIF (3.10 beta) the segmentation panel runs the
   ``storeSegmentation`` command without a data source, so the export dies on ``dataSource.store`` and
   nothing reaches the DICOMweb store, silently. The bundle that defines the command is served with the
   active data source as the default. If a future bundle no longer has that code, it is served unchanged
   and a warning is logged (tests/integration/test_ohif_browser.py would then show whether it is fixed).
"""

from __future__ import annotations

import glob
import logging
import os
from functools import cache
from urllib.parse import quote

logger = logging.getLogger(__name__)

COOKIE = "MONAILABEL_SERVER_URL"
# (code in the bundle, its replacement): see the module docstring.
_FIXES = [
    # 2. Export DICOM SEG: the active data source when the panel passes none.
    (
        "storeSegmentation: async ({\n      segmentationId,\n      dataSource\n    }) => {\n",
        "storeSegmentation: async ({\n      segmentationId,\n      dataSource\n    }) => {\n"
        "      dataSource = dataSource || extensionManager.getActiveDataSource()[0];\n",
    ),
]


def ohif_dir() -> str:
    """The OHIF build inside the installed monailabel package."""
    import monailabel.endpoints

    return os.path.join(os.path.dirname(os.path.realpath(monailabel.endpoints.__file__)), "static", "ohif")


@cache
def patched_bundles() -> dict[str, bytes]:
    """URL path -> fixed contents, for each OHIF script holding code that :data:`_FIXES` replaces."""
    fixed, applied = {}, set()
    for path in sorted(glob.glob(os.path.join(ohif_dir(), "*.bundle.*.js"))):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        changed = text
        for n, (code, replacement) in enumerate(_FIXES):
            if code in changed:
                changed = changed.replace(code, replacement)
                applied.add(n)
        if changed != text:
            fixed[f"/ohif/{os.path.basename(path)}"] = changed.encode()
    for n in sorted(set(range(len(_FIXES))) - applied):
        logger.warning("OHIF fix %d found nothing to replace in %s; that part is served unchanged", n + 2, ohif_dir())
    return fixed


def _is_page(path: str) -> bool:
    """An OHIF page (a route of the single-page app or its index.html), not one of its scripts or images."""
    if not (path == "/ohif" or path.startswith("/ohif/")):
        return False
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return "." not in last or last == "index.html"


class OhifFixes:
    """ASGI middleware: a ``Set-Cookie`` with this server's URL on every OHIF page; the fixed bundle."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET":
            return await self.app(scope, receive, send)
        bundle = patched_bundles().get(scope.get("path", ""))
        if bundle is not None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/javascript"),
                        (b"content-length", str(len(bundle)).encode()),
                    ],
                }
            )
            return await send({"type": "http.response.body", "body": bundle})
        if not _is_page(scope.get("path", "")):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not host:
            return await self.app(scope, receive, send)
        server_url = f"{scope.get('scheme', 'http')}://{host}/"
        cookie = f"{COOKIE}={quote(server_url, safe='')}; Path=/; SameSite=Lax".encode("latin-1")

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)
