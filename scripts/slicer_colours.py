"""Give scar_lge's segments their own colours in 3D Slicer's MONAI Label plugin. Run inside Slicer.

The plugin colours a new segment by looking its name up in its own anatomy table
(``MONAILabelLib.GenericAnatomyColors``, client-side) and leaves any other name to Slicer's generic
colours. That table has no name for the LV cavity, myocardium, scar or MVO, and renaming the
structures after its nearest entries ("blood", "heart", "necrosis") would mislabel them for a
clinician. So this adds the app's names to the plugin's table, with the colours the app serves in
``/info/`` (``label_colors``): the ones its DICOM SEGs carry and its OHIF viewer draws.

In Slicer's Python console (View > Python Console), with the MONAI Label module loaded once::

    exec(open("/path/to/scar_lge/scripts/slicer_colours.py").read())
    use_scar_lge_colours("http://127.0.0.1:8000")

Segments created after that (Next Sample, a new segmentation) take these colours; segments already
in the scene keep theirs. Put the two lines in ``~/.slicerrc.py`` to have them at every start.
"""

import json
import urllib.request


def use_scar_lge_colours(server_url: str, model: str = "scar") -> dict:
    """Add ``model``'s label colours from the server's ``/info/`` to the plugin's table; return what was added."""
    from MONAILabelLib import GenericAnatomyColors  # the plugin's own table, the one getLabelColor reads

    with urllib.request.urlopen(server_url.rstrip("/") + "/info/", timeout=30) as answer:
        info = json.load(answer)
    spec = info["models"].get(model)
    if not spec or "label_colors" not in spec:
        raise ValueError(f"{server_url} serves no label colours for model {model!r}; models: {sorted(info['models'])}")
    # getLabelColor looks up name.lower()
    added = {name.lower(): tuple(int(c) for c in rgb) for name, rgb in spec["label_colors"].items()}
    GenericAnatomyColors.update(added)
    return added
