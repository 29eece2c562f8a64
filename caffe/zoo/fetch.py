"""Resumable HTTP(S) downloads with a progress bar and a sha1 check.

The bytes arrive in a `.part` file in the model folder's hidden .zoo-partial/; only a file
whose size (and sha1, when one is published) checks out is renamed into place, so a cut, a
truncated response or a corrupted copy never leaves a half-written file where Caffe would load
it. A cut download resumes from its `.part` with an HTTP Range request. Only http and https
URLs are opened, and a redirect is followed only to them (urllib would follow one to ftp).
"""
import hashlib
import http.client
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

from ..errors import CaffeError

CHUNK = 1 << 16
TIMEOUT = 30


class ZooError(CaffeError):
    """A model that cannot be found, fetched or verified."""


def sha1_of(path):
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


ALLOWED_SCHEMES = ("https", "http")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http and https only (urllib would also follow one to ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise ZooError(f"{req.full_url}: redirected to '{newurl}', which is not an http "
                           f"or https URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _open(url, start):
    if urllib.parse.urlsplit(url).scheme.lower() not in ALLOWED_SCHEMES:
        raise ZooError(f"{url}: not an http or https URL")
    request = urllib.request.Request(url, headers={"User-Agent": "pycaffe-zoo"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        return _OPENER.open(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:        # the .part already holds every byte
            return None
        raise ZooError(f"{url}: the server answered HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = getattr(e, "reason", e)
        raise ZooError(f"{url}: cannot connect ({reason}). Are you offline? Download the file "
                       f"elsewhere and place it in the model folder, or pass --mirror URL") \
            from None
    except (socket.timeout, TimeoutError, ConnectionError) as e:
        raise ZooError(f"{url}: cannot connect ({e}). Are you offline?") from None


def _total_size(response, start):
    """The whole file's size from Content-Range (206) or Content-Length (200); None if unknown."""
    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) + (start if response.status == 206 else 0) if length else None


def download(url, dest, part, sha1=None, desc=None, progress=None):
    """Fetch url into dest via part (resuming it); check sha1; rename atomically.

    Raises ZooError naming the url and what went wrong; a cut or truncated transfer keeps
    its .part so that the next call resumes, a sha1 mismatch removes it (resuming a corrupt
    file cannot repair it).
    """
    if os.path.islink(part):
        os.remove(part)             # the .part is ours: a link there would redirect the write
    start = os.path.getsize(part) if os.path.exists(part) else 0
    response = _open(url, start)
    total = start
    if response is not None:
        with response:
            if start and response.status != 206:
                start = 0                                   # no Range support: start over
            total = _total_size(response, start)
            _receive(response, part, start, total, desc or os.path.basename(dest), progress)
    got = os.path.getsize(part)
    if total is not None and got != total:
        raise ZooError(f"{url}: download cut short, {got} of {total} bytes received; "
                       f"run the command again to resume")
    if sha1:
        actual = sha1_of(part)
        if actual != sha1.lower():
            os.remove(part)
            raise ZooError(f"{url}: sha1 mismatch, expected {sha1} but the {got} bytes "
                           f"received hash to {actual}; the file was discarded (the server's "
                           f"copy is corrupt or not the published model)")
    try:
        os.replace(part, dest)      # replaces a link at dest, never writes through it
    except OSError as e:
        raise ZooError(f"cannot put the download in place as {dest}: {e.strerror}") from None
    return dest


def _receive(response, part, start, total, desc, progress):
    if progress is None:
        progress = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    from tqdm import tqdm
    os.makedirs(os.path.dirname(part) or ".", exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if start else os.O_TRUNC) | \
        getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(part, flags, 0o666), "ab" if start else "wb") as out, \
            tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=desc, disable=not progress, leave=False) as bar:
        while True:
            try:
                block = response.read(CHUNK)
            except (http.client.HTTPException, ConnectionError, socket.timeout,
                    TimeoutError) as e:
                out.flush()
                raise ZooError(f"{response.url}: connection lost after {out.tell()} bytes "
                               f"({type(e).__name__}); run the command again to resume") \
                    from None
            if not block:
                break
            out.write(block)
            bar.update(len(block))
