"""Fixes to the OHIF viewer that MONAI Label 0.8.5 serves at ``/ohif/`` (OHIF 3.10 beta), applied as served.

1. **The MONAI Label panel talks to this server.** The panel connects to the URL in its
   ``MONAILABEL_SERVER_URL`` cookie and, without one, to ``http://127.0.0.1:8000``: with the app on any
   other port or host it talks to the wrong server, or to none. Each OHIF page this app serves sets that
   cookie to the address the browser used to reach it.
2. **"Export DICOM SEG" stores the SEG.** The segmentation panel runs the ``storeSegmentation`` command
   without a data source, so the export died on ``dataSource.store`` and nothing reached the DICOMweb
   store, silently. The command now defaults to the active data source.
3. **...on the right slices.** dcmjs, which writes the SEG, sorts the source images by descending
   position along the slice normal and OHIF numbers the frames in its own order, so each painted
   slice k of n was stored on slice n - 1 - k (tests/integration/test_ohif_browser.py decoded it). The
   labelmap slices are handed to dcmjs in dcmjs's order.
4. A SEG exported with fix 3 carries :data:`FIXED_EXPORT_MARK` as Software Versions; the app refuses
   SEGs of the unfixed viewer (lib/dicomweb_datastore.written_by_bundled_ohif).
5. **Each structure its colour in the MONAI Label panel.** The panel colours a segment by looking its
   name up in a fixed anatomy table, which knows none of the app's names, and otherwise hashes the name:
   myocardium and MVO came out the same magenta. The table is served led by the app's SEG colours.

Fixes 2-5 edit the scripts that hold that code. Code a future bundle no longer has is served
unchanged, with a warning in the log.
"""

from __future__ import annotations

import glob
import logging
import os
from functools import cache
from urllib.parse import quote

logger = logging.getLogger(__name__)

COOKIE = "MONAILABEL_SERVER_URL"
# Software Versions of a SEG exported by the OHIF this app serves, with its slice order fixed.
FIXED_EXPORT_MARK = "OHIF 3.10 beta, slice order fixed by scar_lge"
# (code in the bundle, its replacement), fixes 2 to 5 of the module docstring in order.
_FIXES = [
    # 2. Export DICOM SEG: the active data source when the panel passes none.
    (
        "storeSegmentation: async ({\n      segmentationId,\n      dataSource\n    }) => {\n",
        "storeSegmentation: async ({\n      segmentationId,\n      dataSource\n    }) => {\n"
        "      dataSource = dataSource || extensionManager.getActiveDataSource()[0];\n",
    ),
    # 3. Slices in the order dcmjs writes them: its normaliser sorts the source images by descending
    # position along the slice normal, while OHIF numbers the frames in its own (display) order, so
    # every painted slice k of n landed on slice n - 1 - k. Sorting the same way first makes the frame
    # numbers point at the right slices.
    (
        "      const segImages = imageIds.map(imageId => esm.cache.getImage(imageId));\n",
        "      const segImages = imageIds.map(imageId => esm.cache.getImage(imageId));\n"
        "      const scarLgePlane = image => esm.metaData.get('imagePlaneModule', image.referencedImageId);\n"
        "      const scarLgeFirst = segImages.length ? scarLgePlane(segImages[0]) : null;\n"
        "      if (scarLgeFirst && scarLgeFirst.rowCosines && scarLgeFirst.columnCosines) {\n"
        "        const [r, c] = [scarLgeFirst.rowCosines, scarLgeFirst.columnCosines];\n"
        "        const n = [r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]];\n"
        "        const along = image => {\n"
        "          const p = scarLgePlane(image).imagePositionPatient;\n"
        "          return p[0] * n[0] + p[1] * n[1] + p[2] * n[2];\n"
        "        };\n"
        "        segImages.sort((a, b) => along(b) - along(a));\n"
        "      }\n",
    ),
    # 4. A SEG exported with fix 3 says so, so the app can tell it from one of the unfixed viewer.
    (
        "      await dataSource.store.dicom(naturalizedReport);\n",
        f"      naturalizedReport.SoftwareVersions = '{FIXED_EXPORT_MARK}';\n"
        "      await dataSource.store.dicom(naturalizedReport);\n",
    ),
    # 5. The MONAI Label panel's overlay in each structure's own colour (filled in by _fixes()).
    (
        "const GenericAnatomyColors = [{\n  label: 'background',\n  value: rgbToHex(0, 0, 0)\n}, {\n",
        None,
    ),
]


def ohif_dir() -> str:
    """The OHIF build inside the installed monailabel package."""
    import monailabel.endpoints

    return os.path.join(os.path.dirname(os.path.realpath(monailabel.endpoints.__file__)), "static", "ohif")


def _fixes() -> list[tuple[str, str]]:
    """:data:`_FIXES` with fix 5's replacement: the panel's colour table led by the SEG colours of
    :data:`lib.dicom_seg.SEGMENTS`, so the overlay and a saved SEG show each structure alike."""
    from .dicom_seg import SEGMENTS

    ours = "".join(
        f"{{\n  label: '{code.name}',\n  value: rgbToHex({code.rgb[0]}, {code.rgb[1]}, {code.rgb[2]})\n}}, "
        for code in SEGMENTS.values()
    )
    return [(code, replacement or code.replace("[{", f"[{ours}{{", 1)) for code, replacement in _FIXES]


@cache
def patched_bundles() -> dict[str, bytes]:
    """URL path -> fixed contents, for each OHIF script holding code that :data:`_FIXES` replaces."""
    fixed, applied, fixes = {}, set(), _fixes()
    for path in sorted(glob.glob(os.path.join(ohif_dir(), "*.bundle.*.js"))):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        changed = text
        for n, (code, replacement) in enumerate(fixes):
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
