"""OHIF in a real browser (Debian chromium, headless, driven by Playwright) against the app on Orthanc.

What an annotator does, through the UI only: open a study in the MONAI Label mode, connect, run ``scar``
and see the overlay; open the study's SEG in OHIF's segmentation mode, paint scar with the brush, and
"Export DICOM SEG". MONAI Label 0.8.5's MONAI Label mode has no save control (upstream #1805), so the
edit is saved with OHIF's own SEG export, which the app serves fixed (lib/ohif_fixes.py).

Screenshots are kept in the test's folder, or in $SCAR_LGE_SCREENSHOTS when set (the README's come
from there). Chromium and Orthanc are required: ``scripts/install_system_packages.sh`` installs them.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from dicomweb_client import DICOMwebClient

from lib.dicomweb_datastore import LISTING_TTL_S
from tests.conftest import SAMPLE_DATA

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def server(dicomweb_server):
    return dicomweb_server  # the app on this module's Orthanc (tests/integration/conftest.py)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "chromium is missing: run scripts/install_system_packages.sh"
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
        )
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("SCAR_LGE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _study_uid(store, name: str) -> str:
    found = DICOMwebClient(url=store.dicomweb).search_for_series(
        search_filters={"SeriesInstanceUID": store.series[name]}
    )
    return found[0]["0020000D"]["Value"][0]


def _rgb(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _coloured(rgb: np.ndarray) -> np.ndarray:
    """Pixels whose colour is far from grey: an overlay on a greyscale MR image."""
    return (rgb.max(axis=-1) - rgb.min(axis=-1)) > 80


def _coloured_pixels(rgb: np.ndarray) -> int:
    return int(_coloured(rgb).sum())


def _export_dicom_seg(page, segmentation: str, attempts: int = 3) -> None:
    """The segmentation's menu -> Export & Download -> Export DICOM SEG, until OHIF's report dialog opens.

    The submenu opens on hover and can close again while the pointer travels to its item (seen once in
    CI), so the item is reached with the keyboard, as the menu allows, and the whole path is retried.
    """
    for _ in range(attempts):
        menu = page.get_by_text(segmentation, exact=True).last.bounding_box()
        page.mouse.click(menu["x"] - 30, menu["y"] + menu["height"] / 2)
        page.get_by_text("Export & Download").hover()
        page.keyboard.press("ArrowRight")  # opens the submenu, its first item (Export DICOM SEG) focused
        try:
            page.get_by_text("Export DICOM SEG").wait_for(timeout=10_000)
            page.keyboard.press("Enter")
            page.get_by_text("Create Report").wait_for(timeout=10_000)
            return
        except Exception:  # Playwright's TimeoutError: close whatever is open and go again
            page.keyboard.press("Escape")
            page.keyboard.press("Escape")
    raise AssertionError("OHIF's Export DICOM SEG dialog did not open")


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(url, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
    page.get_by_text("Confirm and Hide").click(timeout=TIMEOUT_MS)  # OHIF's investigational-use banner
    return page


def test_monai_label_mode_runs_scar_and_shows_the_overlay(browser, server, store, shots):
    uid = _study_uid(store, "lge_001")
    page = _open(browser, f"{server.url}/ohif/monai-label?StudyInstanceUIDs={uid}")
    infers = []
    page.on("request", lambda r: infers.append(r.url) if "/infer/" in r.url else None)
    # The panel connects to the server that served it (lib/ohif_fixes.py), not to port 8000.
    url_field = page.locator("#monailabelServerURL")
    url_field.wait_for(timeout=TIMEOUT_MS)
    assert url_field.input_value().rstrip("/") == server.url
    viewport = page.locator("[data-cy='viewport-pane']").first
    viewport.wait_for(timeout=TIMEOUT_MS)
    time.sleep(3)  # the first image renders
    before_rgb = _rgb(viewport.screenshot())
    before = _coloured_pixels(before_rgb)
    url_field.locator("xpath=../..").locator("button").first.click()  # connect
    page.locator(".monaiLabelPanel").get_by_role("button", name="Run").first.click(timeout=TIMEOUT_MS)
    page.get_by_text("Running Segmentation - Successful").wait_for(timeout=TIMEOUT_MS)
    time.sleep(2)
    page.screenshot(path=str(shots / "ohif-1-monai-label-scar.png"))
    rgb = _rgb(viewport.screenshot())
    after = _coloured_pixels(rgb)
    assert infers and f"image={store.series['lge_001']}" in infers[0]  # infer by SeriesInstanceUID
    assert after > before + 500  # the segmentation is drawn over the image
    # In the app's colours (cavity red, myocardium salmon), not the panel's hash colours, which drew
    # myocardium and MVO in the same magenta: almost no overlay pixel is bluer than it is red.
    overlay = _coloured(rgb) & ~_coloured(before_rgb)  # the viewport's own blue text and frame excluded
    assert (rgb[..., 2] > rgb[..., 0])[overlay].mean() < 0.05
    page.close()


def test_segmentation_mode_paints_and_exports_a_seg_to_orthanc(browser, server, store, shots, tmp_path):
    series = store.series["lge_000"]
    # The app's own label of the series, saved as a SEG (what Slicer or a scripted correction would store).
    with open(SAMPLE_DATA / "labels" / "final" / "lge_000.nii.gz", "rb") as f:
        r = requests.put(
            f"{server.url}/datastore/label",
            params={"image": series, "tag": "final"},
            files={"label": ("label.nii.gz", f.read())},
            data={"params": "{}"},
            timeout=120,
        )
    assert r.status_code == 200, r.text
    page = _open(browser, f"{server.url}/ohif/segmentation?StudyInstanceUIDs={_study_uid(store, 'lge_000')}")
    page.locator("[data-cy='viewport-pane']").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("scar_lge label").first.dblclick(timeout=TIMEOUT_MS)  # the SEG in the study browser
    page.get_by_role("button", name="Yes").click(timeout=TIMEOUT_MS)
    for name in ("lv_cavity", "myocardium", "scar", "mvo"):  # our segment names, each with its colour
        page.get_by_text(name, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    page.screenshot(path=str(shots / "ohif-2-seg-loaded.png"))

    # The slice on screen: OHIF's overlay reads "I:<Instance Number> (<k>/<n>)"; here slice k of the
    # series grid is Instance Number k + 1 (lib/dicom_io.write_dicom_series).
    overlay = page.locator("[data-cy='viewport-overlay-bottom-right']").first.inner_text()
    on_screen = int(overlay.split("I:")[1].split()[0])
    # Paint scar on the lateral wall with a 4 mm brush, as an annotator would.
    page.get_by_text("scar", exact=True).first.click()
    page.locator("[data-cy='Brush']").first.click()
    radius = page.locator("input[type='number']").first
    radius.fill("4")
    radius.press("Enter")
    box = page.locator("canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx + 70, cy - 30)
    page.mouse.down()
    for k in range(1, 21):
        page.mouse.move(cx + 70, cy - 30 + 3 * k)
    page.mouse.up()
    time.sleep(1)
    page.screenshot(path=str(shots / "ohif-3-scar-painted.png"))

    # Export DICOM SEG: the segmentation's menu, then OHIF's report-name dialog.
    stored = []
    page.on("response", lambda r: stored.append(r.status) if r.request.method == "POST" else None)
    _export_dicom_seg(page, "scar_lge label")
    page.locator("input[type='text']").first.fill("corrected in OHIF")
    page.get_by_role("button", name="Save").click()
    deadline = time.time() + 60
    while not stored and time.time() < deadline:
        page.wait_for_timeout(500)
    page.close()
    assert stored == [200]  # STOW-RS through the app's /proxy/dicom to Orthanc

    client = DICOMwebClient(url=store.dicomweb)
    exported = [
        s for s in client.search_for_series(search_filters={"Modality": "SEG"})
        if s.get("0008103E", {}).get("Value") == ["corrected in OHIF"]
    ]  # fmt: skip
    assert len(exported) == 1
    seg = client.retrieve_series(exported[0]["0020000D"]["Value"][0], exported[0]["0020000E"]["Value"][0])[0]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    assert {str(s.SegmentLabel) for s in seg.SegmentSequence} >= {"lv_cavity", "myocardium", "scar"}

    # The app reads the newest SEG as the series' label: the label it had, plus the painted scar, on
    # the slice that was on screen (the bundled OHIF put it on the mirror-image slice; served fixed).
    time.sleep(LISTING_TTL_S + 1)  # past the app's listing cache
    r = requests.get(f"{server.url}/datastore/label", params={"label": series, "tag": "final"}, timeout=120)
    assert r.status_code == 200, r.text
    (tmp_path / "label.nii.gz").write_bytes(r.content)
    import nibabel as nib

    from lib.label_io import check_label

    series_dir = tmp_path / "series"
    series_dir.mkdir()
    for ds in client.retrieve_series(seg.StudyInstanceUID, series):
        ds.save_as(series_dir / f"{ds.SOPInstanceUID}.dcm")
    edited = np.asarray(nib.load(str(tmp_path / "label.nii.gz")).dataobj)
    original = check_label(str(SAMPLE_DATA / "labels" / "final" / "lge_000.nii.gz"), str(series_dir))
    changed = edited != original
    assert 20 < changed.sum() < 0.05 * (original > 0).sum()  # a brush stroke, not a different label
    assert set(np.unique(edited[changed])) == {3}  # painted as scar
    assert sorted({int(k) for k in np.nonzero(changed)[2]}) == [on_screen - 1]  # on the slice shown


def test_api_docs_page_renders_without_internet(browser, server):
    page = browser.new_page()
    outside = []

    def local_only(route):
        if route.request.url.startswith(server.url):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()  # a hospital network without internet

    page.route("**/*", local_only)
    page.goto(f"{server.url}/", wait_until="load", timeout=TIMEOUT_MS)
    page.locator(".swagger-ui .info .title").wait_for(timeout=TIMEOUT_MS)
    assert "MONAILabel" in page.locator(".swagger-ui .info .title").inner_text()
    assert page.locator(".opblock").count() > 10  # the endpoints are listed
    assert outside == []
    page.close()
