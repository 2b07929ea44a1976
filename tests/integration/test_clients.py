"""What MONAI Label 0.8.5's own clients send and how they parse the answer, replayed against the app.

The OHIF panel (monai-label extension of the OHIF bundle inside the monailabel wheel, MonaiLabelPanel and
MonaiLabelClient) and the Slicer plugin (``monailabel.client.MONAILabelClient``) are the two clients
annotators use. Each test repeats one of their requests and the parsing that follows it.
"""

from __future__ import annotations

import gzip
import json
import os

import nibabel as nib
import numpy as np
import requests

from lib.constants import LABELS


def _ohif_label_maps(info: dict) -> tuple[dict, dict, list]:
    """MonaiLabelPanel.onInfo: per model, label name -> index; and the segments it creates, in order."""
    label_to_idx, names_per_model = {}, {}
    all_labels = list(info["labels"])
    for model, spec in info["models"].items():
        if spec["type"] not in ("deepgrow", "deepedit", "vista3d", "segmentation"):
            continue
        labels = spec["labels"]
        if isinstance(labels, list):  # numbered from 1, whatever the values
            label_to_idx[model] = {name: i for i, name in enumerate(labels, start=1)}
        else:
            label_to_idx[model] = dict(labels)
        all_labels += list(label_to_idx[model])
        names_per_model[model] = sorted(label_to_idx[model])
    segments = sorted(set(all_labels))  # labelsOrdered: segment i + 1 for each name
    return label_to_idx, names_per_model, segments


def test_ohif_panel_reads_each_structure_at_its_value(server):
    info = requests.get(f"{server.url}/info/", timeout=30).json()
    label_to_idx, _, segments = _ohif_label_maps(info)
    expected = {k: v for k, v in LABELS.items() if k != "background"}
    assert label_to_idx["scar"] == expected
    assert "background" not in segments  # no empty black 'background' segment to paint with


def _parse_nrrd(body: bytes) -> tuple[dict, bytes]:
    """OHIF's SegmentationReader.parseNrrdData (nrrd-js): a text header, a blank line, the data."""
    header, _, data = body.partition(b"\n\n")
    fields = {}
    for line in header.decode("ascii").splitlines()[1:]:
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields, data


def test_ohif_infer_answer_is_a_raw_nrrd_its_reader_decodes(server, tmp_path):
    # MonaiLabelClient.infer: output=image, params as a JSON form field, nrrd, uint8, uncompressed.
    params = {
        "result_extension": ".nrrd",
        "result_dtype": "uint8",
        "result_compress": False,
        "restore_label_idx": False,
    }
    r = requests.post(
        f"{server.url}/infer/scar",
        params={"image": "lge_003", "output": "image"},
        data={"params": json.dumps(params)},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    fields, data = _parse_nrrd(r.content)
    assert fields["encoding"] == "raw"
    assert fields["type"] in ("uint8", "unsigned char")
    sizes = [int(v) for v in fields["sizes"].split()]
    assert len(data) == int(np.prod(sizes))  # exactly one byte per voxel: nothing gzip-compressed
    label = np.frombuffer(data, np.uint8).reshape(sizes[::-1]).transpose(2, 1, 0)

    # The same study as NIfTI: the same labels on the same grid.
    r = requests.post(f"{server.url}/infer/scar", params={"image": "lge_003", "output": "image"}, timeout=300)
    assert r.status_code == 200
    (tmp_path / "label.nii.gz").write_bytes(r.content)
    nifti = np.asarray(nib.load(str(tmp_path / "label.nii.gz")).dataobj)
    assert np.array_equal(label, nifti)
    assert set(np.unique(label)) <= set(LABELS.values()) and (label == LABELS["myocardium"]).any()


def test_compressed_nrrd_stays_the_default_for_other_clients(server):
    r = requests.post(
        f"{server.url}/infer/scar",
        params={"image": "lge_003", "output": "image"},
        data={"params": json.dumps({"result_extension": ".nrrd"})},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    fields, data = _parse_nrrd(r.content)
    assert fields["encoding"] == "gzip"
    assert gzip.decompress(data)


def _zip_of(folder, path, extra: dict | None = None) -> bytes:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"series/{f.name}")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return path.read_bytes()


def test_every_study_next_sample_hands_out_downloads_as_a_volume(server, tmp_path):
    from lib.label_io import read_geometry

    # A DICOM series folder study: MONAI Label 0.8.5 answered 404, so Slicer could not load it.
    r = requests.get(f"{server.url}/datastore/image", params={"image": "lge_dicom_014"}, timeout=120)
    assert r.status_code == 200, r.text
    assert 'filename="lge_dicom_014.nii.gz"' in r.headers["content-disposition"]
    (tmp_path / "lge_dicom_014.nii.gz").write_bytes(r.content)
    series = read_geometry(str(server.studies / "lge_dicom_014.dicom"))
    assert read_geometry(str(tmp_path / "lge_dicom_014.nii.gz")).matches(series)
    # What the plugin's Next Sample reads: url and name to download when path is not on its machine.
    sample = requests.post(f"{server.url}/activelearning/first", json={}, timeout=120).json()
    assert sample["url"] == f"/datastore/image?image={sample['id']}" and sample["name"]
    assert requests.get(f"{server.url}{sample['url']}", timeout=120).status_code == 200


def test_a_dicom_series_as_one_zip_arrives_by_every_route(server, tmp_path):
    from lib.label_io import read_geometry

    folder = server.studies / "lge_dicom_014.dicom"
    content = _zip_of(folder, tmp_path / "series.zip")
    series = read_geometry(str(folder))

    # 1. infer on an uploaded ZIP: the label on the series' grid
    r = requests.post(
        f"{server.url}/infer/scar", params={"output": "image"}, files={"file": ("series.zip", content)}, timeout=300
    )
    assert r.status_code == 200, r.text
    (tmp_path / "label.nii.gz").write_bytes(r.content)
    assert read_geometry(str(tmp_path / "label.nii.gz")).matches(series)

    # 2. an upload session, created the way the Slicer plugin's client creates one (PUT /session/)
    from monailabel.client import MONAILabelClient

    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    session_id = client.create_session(str(tmp_path / "series.zip"))["session_id"]
    label_file, figures = client.infer("scar", "", {}, session_id=session_id)
    assert read_geometry(label_file).matches(series) and figures["lv_myocardial_mass_g"] > 20

    # 3. a new datastore study, stored as a series folder
    r = requests.put(
        f"{server.url}/datastore/image", params={"image": "zipped_series"}, files={"file": ("series.zip", content)},
        data={"params": "{}"}, timeout=120,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert read_geometry(str(server.studies / "zipped_series.dicom")).matches(series)
    r = requests.post(f"{server.url}/infer/scar", params={"image": "zipped_series", "output": "json"}, timeout=300)
    assert r.status_code == 200, r.text


def test_a_bad_zip_is_refused_and_writes_nothing_outside(server, tmp_path):
    import zipfile

    import pydicom

    folder = server.studies / "lge_dicom_014.dicom"
    with zipfile.ZipFile(tmp_path / "escape.zip", "w") as z:  # a member that wants out of any folder
        z.write(sorted(folder.iterdir())[0], "../../escaped.dcm")
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:  # two series: the same slices under other UIDs
        for f in sorted(folder.iterdir()):
            z.write(f, f"one/{f.name}")
            ds = pydicom.dcmread(f)
            ds.SeriesInstanceUID, ds.SOPInstanceUID = ds.SeriesInstanceUID + ".2", ds.SOPInstanceUID + ".2"
            ds.save_as(tmp_path / f.name)
            z.write(tmp_path / f.name, f"two/{f.name}")
    cases = {
        "two series": ((tmp_path / "two.zip").read_bytes(), "2 DICOM series"),
        "not a zip": (b"PK but not really", "not a readable ZIP"),
    }
    before = sorted(p.name for p in server.studies.iterdir())
    for what, (content, reason) in cases.items():
        r = requests.put(
            f"{server.url}/datastore/image", params={"image": "bad_zip"}, files={"file": ("s.zip", content)},
            data={"params": "{}"}, timeout=120,
        )  # fmt: skip
        assert r.status_code == 422, (what, r.text)
        assert reason in r.json()["detail"], (what, r.text)
    assert sorted(p.name for p in server.studies.iterdir()) == before
    assert not list(server.studies.parent.glob("escaped.dcm")) and not list(
        server.studies.parent.parent.glob("escaped.dcm")
    )


def test_ohif_panel_colours_each_structure_as_the_seg_does(server):
    """The panel's getLabelColor looks the name up in GenericAnatomyColors (served fixed) before hashing it."""
    import re

    from lib.dicom_seg import SEGMENTS
    from lib.ohif_fixes import ohif_dir

    bundle = next(
        name
        for name in os.listdir(ohif_dir())
        if "GenericAnatomyColors = [" in open(os.path.join(ohif_dir(), name), errors="ignore").read()
    )
    served = requests.get(f"{server.url}/ohif/{bundle}", timeout=60).text
    table = served[served.index("const GenericAnatomyColors = [") :]
    found = dict(re.findall(r"label: '([^']+)',\s*value: rgbToHex\((\d+, \d+, \d+)\)", table)[:8])
    for code in SEGMENTS.values():
        assert found[code.name] == ", ".join(str(v) for v in code.rgb)
    assert len({code.rgb for code in SEGMENTS.values()}) == 4


_SLICER_REPLAY = """
import ast, json, sys
plugin, snippet, url, names = sys.argv[1:5]
sys.path.insert(0, plugin)
from MONAILabelLib import GenericAnatomyColors
# The plugin's own getLabelColor, taken from its source (the module itself needs Slicer to import).
tree = ast.parse(open(plugin + "/MONAILabel.py").read())
method = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "getLabelColor")
plugin_ns = {"GenericAnatomyColors": GenericAnatomyColors}
exec(compile(ast.Module([method], []), "MONAILabel.py", "exec"), plugin_ns)
colour = lambda name: plugin_ns["getLabelColor"](None, name)
before = {name: colour(name) for name in json.loads(names)}
exec(open(snippet).read())
use_scar_lge_colours(url)
print(json.dumps({"before": before, "after": {name: colour(name) for name in json.loads(names)}}))
"""


def test_slicer_plugin_colours_each_structure_as_the_seg_does(server):
    """The Slicer plugin colours a segment by name from its own table; scripts/slicer_colours.py adds ours."""
    import subprocess
    import sys
    from pathlib import Path

    from lib.dicom_seg import SEGMENTS

    plugin = Path(sys.prefix) / "monailabel" / "plugins" / "slicer" / "MONAILabel"
    snippet = Path(__file__).resolve().parents[2] / "scripts" / "slicer_colours.py"
    names = list(requests.get(f"{server.url}/info/", timeout=30).json()["models"]["scar"]["labels"])
    run = subprocess.run(
        [sys.executable, "-c", _SLICER_REPLAY, str(plugin), str(snippet), server.url, json.dumps(names)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    colours = json.loads(run.stdout.splitlines()[-1])
    # Without the snippet the plugin knows none of the names (Slicer then hands out generic colours).
    assert colours["before"] == {name: None for name in names}
    expected = {code.name: [c / 255.0 for c in code.rgb] for code in SEGMENTS.values()}
    assert colours["after"] == expected
