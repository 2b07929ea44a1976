"""What MONAI Label 0.8.5's own clients send and how they parse the answer, replayed against the app.

The OHIF panel (monai-label extension of the OHIF bundle inside the monailabel wheel, MonaiLabelPanel and
MonaiLabelClient) and the Slicer plugin (``monailabel.client.MONAILabelClient``) are the two clients
annotators use. Each test repeats one of their requests and the parsing that follows it.
"""

from __future__ import annotations

import gzip
import json

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
