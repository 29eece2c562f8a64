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
deploy prototxt first. Every write stays inside the model folder: partial downloads live in
its hidden `.zoo-partial/` and are renamed into place once their sha1 checks out; a named
model's folder is assembled as `<root>/.<name>.zoo-partial` and renamed to `<root>/<name>`
when complete, so a failed download leaves no half-made model folder. Only http and https
URLs are fetched, and only under the plain file names the readme gives.
"""
import os
import shutil
import tempfile
import urllib.parse

from .fetch import ALLOWED_SCHEMES, ZooError, download as fetch, sha1_of
from .index import MODELS

__all__ = ["MODELS", "ZooError", "read_frontmatter", "download", "verify", "info",
           "model_files"]

REQUIRED = ("caffemodel", "caffemodel_url")
# Keys of the index that are ours, not BVLC front matter: they stay out of readme.md.
_INDEX_ONLY = ("summary",)
PARTIAL = ".zoo-partial"
STAGING_SUFFIX = ".zoo-partial"


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


def _file_name(name, key, where):
    """A file name from front matter: a plain name inside the model folder, nothing else.

    A readme is data from whoever published the folder: `caffemodel: ../../.bashrc` or an
    absolute path must not choose where a download is written.
    """
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
            or os.path.basename(name) != name or os.path.isabs(name)):
        raise ZooError(f"{where}: {key}: '{name}' is not a plain file name; the files of a "
                       f"model folder are written inside it")
    return name


def _url(url, key, where):
    scheme = urllib.parse.urlsplit(url or "").scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise ZooError(f"{where}: {key}: '{url}' is not an http or https URL (only "
                       f"{' and '.join(ALLOWED_SCHEMES)} are fetched)")
    return url


def model_files(meta, where="readme.md"):
    """(file name, url, sha1) for each file a model folder should hold; the names are checked
    to be plain file names (ZooError naming `where` and the field otherwise)."""
    files = []
    if meta.get("prototxt") and meta.get("prototxt_url"):
        files.append((_file_name(meta["prototxt"], "prototxt", where), meta["prototxt_url"],
                      meta.get("prototxt_sha1")))
    if meta.get("caffemodel"):
        files.append((_file_name(meta["caffemodel"], "caffemodel", where),
                      meta.get("caffemodel_url"), meta.get("sha1")))
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
    """(folder, staging): a known model name -> root/name, or a model folder.

    A known name whose folder does not exist yet is built in a hidden staging folder beside it
    (root/.name.zoo-partial, which a cut download resumes from) and renamed to root/name only
    once every file checks out: a failed download leaves no half-made model folder.
    """
    if target in MODELS and not os.path.isfile(os.path.join(target, "readme.md")):
        folder = os.path.join(root, target)
        if os.path.isfile(os.path.join(folder, "readme.md")):
            return folder, None
        staging = os.path.join(root, f".{target}{STAGING_SUFFIX}")
        os.makedirs(staging, exist_ok=True)
        if not os.path.exists(os.path.join(staging, "readme.md")):
            _write_readme(staging, target, MODELS[target])
        return folder, staging
    if os.path.isdir(target):
        return target, None
    raise ZooError(f"unknown model '{target}': not a folder and not one of "
                   f"{', '.join(MODELS)} (see `caffe zoo list`)")


def _mirrored(url, mirror):
    return mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1] if mirror else url


def download(target, root="models", mirror=None, progress=None, log=print):
    """Fetch a model's files into its folder; returns the folder.

    target: a name from caffe.zoo.MODELS (the folder is root/name) or a model folder.
    mirror: a base URL that replaces each file's published location (same file names).
    Files already present with the published sha1 are kept; the others are fetched. Every
    file is written inside the model folder under the name its readme gives (a plain file
    name), from an http or https URL only; partial downloads wait in the folder's hidden
    .zoo-partial/ and are renamed into place once their size and sha1 check out.
    """
    folder, staging = _resolve(target, root)
    work = staging or folder
    readme = os.path.join(folder, "readme.md")
    meta = read_frontmatter(work)
    missing = [k for k in REQUIRED if not meta.get(k)]
    if missing:
        raise ZooError(f"{readme}: front matter lacks {', '.join(missing)}")
    files = model_files(meta, readme)
    if mirror:
        _url(mirror, "-mirror", "the command line")
    for name, url, _ in files:       # every file is checked before anything is fetched
        key = "caffemodel_url" if name == meta.get("caffemodel") else "prototxt_url"
        _url(url, key, readme)
    partial = os.path.join(work, PARTIAL)
    if os.path.islink(partial) or (os.path.exists(partial) and not os.path.isdir(partial)):
        raise ZooError(f"{os.path.join(folder, PARTIAL)}: not a folder (a link or a file); "
                       f"downloads are written only inside the model folder")
    try:
        _fetch_all(files, work, folder, partial, mirror, progress, log)
    except BaseException:
        _clean_up(partial, staging)
        raise
    _clean_up(partial, None)
    if staging is not None:
        try:
            os.rename(staging, folder)   # onto nothing or an empty folder: atomic
        except OSError as e:
            raise ZooError(f"cannot move the downloaded model from {staging} to {folder}: "
                           f"{e.strerror}") from None
    return folder


def _clean_up(partial, staging):
    """Remove an empty .zoo-partial; after a failure, a staging folder with nothing to
    resume from (a mismatch or a refusal, not a cut) goes too."""
    try:
        os.rmdir(partial)
    except OSError:
        pass
    if staging is not None and not os.path.exists(partial):
        shutil.rmtree(staging, ignore_errors=True)


def _fetch_all(files, work, folder, partial, mirror, progress, log):
    for name, url, sha1 in files:
        dest = os.path.join(work, name)
        shown = os.path.join(folder, name)
        if os.path.isfile(dest) and (not sha1 or sha1_of(dest) == sha1.lower()):
            log(f"{shown}: already there{'' if sha1 else ' (no published sha1 to check)'}")
            continue
        log(f"Downloading {_mirrored(url, mirror)} to {shown}")
        fetch(_mirrored(url, mirror), dest, os.path.join(partial, name + ".part"), sha1,
              desc=name, progress=progress)
        log(f"{shown}: " + (f"sha1 {sha1} checks out" if sha1 else
                            f"no published sha1; its sha1 is {sha1_of(dest)} (unverified)"))


def verify(folder):
    """[(file, status, detail)] for a model folder: status ok, missing, mismatch or unverified."""
    results = []
    for name, _, sha1 in model_files(read_frontmatter(folder),
                                     os.path.join(folder, "readme.md")):
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
