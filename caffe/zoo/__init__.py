"""Caffe's model zoo: model folders described by a readme.md's YAML front matter.

A model folder (BVLC's convention, docs/model_zoo.md) holds the net definitions and a
readme.md that starts with front matter such as

    ---
    name: BAIR/BVLC CaffeNet Model
    caffemodel: bvlc_reference_caffenet.caffemodel
    caffemodel_url: http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel
    license: unrestricted
    sha1: 4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46
    caffe_commit: 709dc15af4a06bebda027c1eb2b3f3e3375d5077
    ---

`download` fetches the weights named there (what BVLC's scripts/download_model_binary.py
does) and, for the models in caffe.zoo.index, creates the folder, its readme.md and the
deploy prototxt first. Partial downloads live in `<parent>/.zoo-partial/<folder>/`, never in
the model folder itself.
"""
import os
import tempfile

from .fetch import ZooError, download as fetch, sha1_of
from .index import MODELS

__all__ = ["MODELS", "ZooError", "read_frontmatter", "download", "verify", "info",
           "model_files"]

REQUIRED = ("caffemodel", "caffemodel_url")
# Keys of the index that are ours, not BVLC front matter: they stay out of readme.md.
_INDEX_ONLY = ("summary",)
PARTIAL = ".zoo-partial"


def read_frontmatter(folder):
    """The YAML front matter of folder/readme.md as a dict (ZooError when absent or bad)."""
    from .._optional import require
    yaml = require("yaml", extra="zoo", feature="model zoo readme front matter")
    path = os.path.join(folder, "readme.md")
    if not os.path.isfile(path):
        raise ZooError(f"{folder}: not a model folder (no readme.md); give a model name from "
                       f"`caffe zoo list` or a folder with a readme.md")
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    marks = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if len(marks) < 2:
        raise ZooError(f"{path}: no front matter (a block between two '---' lines)")
    try:
        meta = yaml.safe_load("\n".join(lines[marks[0] + 1:marks[1]])) or {}
    except yaml.YAMLError as e:
        raise ZooError(f"{path}: front matter is not valid YAML: {e}") from None
    if not isinstance(meta, dict):
        raise ZooError(f"{path}: front matter must be 'key: value' lines")
    return {str(k): (str(v) if v is not None else None) for k, v in meta.items()}


def model_files(meta):
    """(file name, url, sha1) for each file a model folder should hold."""
    files = []
    if meta.get("prototxt") and meta.get("prototxt_url"):
        files.append((meta["prototxt"], meta["prototxt_url"], meta.get("prototxt_sha1")))
    if meta.get("caffemodel"):
        files.append((meta["caffemodel"], meta.get("caffemodel_url"), meta.get("sha1")))
    return files


def _write_readme(folder, name, entry):
    meta = {k: v for k, v in entry.items() if k not in _INDEX_ONLY and v is not None}
    body = ["---"] + [f"{k}: {v}" for k, v in meta.items()] + ["---", "",
            entry.get("summary", ""), "",
            f"Fetched by `caffe zoo download {name}`; license: {entry.get('license')}.", ""]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".readme.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(body))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)      # mkstemp's 0600 is for secrets, not a readme
    os.replace(tmp, os.path.join(folder, "readme.md"))


def _resolve(target, root):
    """A known model name -> root/name (created with its readme.md); else a folder."""
    if target in MODELS and not os.path.isfile(os.path.join(target, "readme.md")):
        folder = os.path.join(root, target)
        os.makedirs(folder, exist_ok=True)
        if not os.path.exists(os.path.join(folder, "readme.md")):
            _write_readme(folder, target, MODELS[target])
        return folder
    if os.path.isdir(target):
        return target
    raise ZooError(f"unknown model '{target}': not a folder and not one of "
                   f"{', '.join(MODELS)} (see `caffe zoo list`)")


def _mirrored(url, mirror):
    return mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1] if mirror else url


def download(target, root="models", mirror=None, progress=None, log=print):
    """Fetch a model's files into its folder; returns the folder.

    target: a name from caffe.zoo.MODELS (the folder is root/name) or a model folder.
    mirror: a base URL that replaces each file's published location (same file names).
    Files already present with the published sha1 are kept; the others are fetched.
    """
    folder = _resolve(target, root)
    meta = read_frontmatter(folder)
    missing = [k for k in REQUIRED if not meta.get(k)]
    if missing:
        raise ZooError(f"{os.path.join(folder, 'readme.md')}: front matter lacks "
                       f"{', '.join(missing)}")
    partial = os.path.join(os.path.dirname(os.path.abspath(folder)), PARTIAL,
                           os.path.basename(os.path.abspath(folder)))
    for name, url, sha1 in model_files(meta):
        dest = os.path.join(folder, name)
        if os.path.exists(dest) and (not sha1 or sha1_of(dest) == sha1.lower()):
            log(f"{dest}: already there{'' if sha1 else ' (no published sha1 to check)'}")
            continue
        log(f"Downloading {_mirrored(url, mirror)} to {dest}")
        fetch(_mirrored(url, mirror), dest, os.path.join(partial, name + ".part"), sha1,
              desc=name, progress=progress)
        log(f"{dest}: " + (f"sha1 {sha1} checks out" if sha1 else
                           f"no published sha1; its sha1 is {sha1_of(dest)} (unverified)"))
    try:                              # leave no empty .zoo-partial folders behind
        os.removedirs(partial)
    except OSError:
        pass
    return folder


def verify(folder):
    """[(file, status, detail)] for a model folder: status ok, missing, mismatch or unverified."""
    results = []
    for name, _, sha1 in model_files(read_frontmatter(folder)):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            results.append((name, "missing", "not downloaded"))
            continue
        actual = sha1_of(path)
        if not sha1:
            results.append((name, "unverified", f"no published sha1; sha1 {actual}"))
        elif actual == sha1.lower():
            results.append((name, "ok", f"sha1 {actual}"))
        else:
            results.append((name, "mismatch", f"sha1 {actual}, expected {sha1}"))
    return results


def info(name):
    """The index entry of a model name (ZooError when unknown)."""
    if name not in MODELS:
        raise ZooError(f"unknown model '{name}' (known: {', '.join(MODELS)})")
    return dict(MODELS[name])
