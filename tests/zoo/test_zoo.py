"""caffe zoo against a local HTTP server: success, resume after a cut, truncated and corrupt files."""
import hashlib
import http.server
import os
import threading

import pytest

from caffe import zoo
from caffe.tools.caffe import main
from caffe.zoo import ZooError

PAYLOAD = bytes(range(256)) * 4096 + b"caffemodel"          # about 1 MiB
SHA1 = hashlib.sha1(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves /good, /cut (drops the connection after CUT bytes once), /short, /corrupt."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        name = self.path.rsplit("/", 1)[-1]
        body = {"short.caffemodel": PAYLOAD[:-1000],
                "corrupt.caffemodel": PAYLOAD[:5000] + b"X" + PAYLOAD[5001:]}.get(name, PAYLOAD)
        if name == "missing.caffemodel":
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if name == "cut.caffemodel" and not server.cut_done:
            server.cut_done = True
            self.wfile.write(body[start:start + 300_000])     # then hang up mid-file
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests, httpd.cut_done = [], False
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _model_dir(root, file, url, sha1=SHA1):
    folder = root / "mymodel"
    folder.mkdir()
    (folder / "readme.md").write_text(
        f"---\nname: test model\ncaffemodel: {file}\ncaffemodel_url: {url}/{file}\n"
        f"license: unrestricted\nsha1: {sha1}\n---\n\nA model for the tests.\n")
    return folder


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_download_a_model_folder(server, tmp_path, capsys):
    _, url = server
    folder = _model_dir(tmp_path, "good.caffemodel", url)
    assert main(["zoo", "download", str(folder)]) == 0
    assert (folder / "good.caffemodel").read_bytes() == PAYLOAD
    assert _listing(tmp_path) == ["mymodel", "mymodel/good.caffemodel", "mymodel/readme.md"]
    assert main(["zoo", "verify", str(folder)]) == 0
    assert f"ok (sha1 {SHA1})" in capsys.readouterr().out
    # A second download finds the file and fetches nothing.
    requests = len(server[0].requests)
    assert main(["zoo", "download", str(folder)]) == 0
    assert len(server[0].requests) == requests


def test_download_resumes_after_a_cut(server, tmp_path, capsys):
    httpd, url = server
    folder = _model_dir(tmp_path, "cut.caffemodel", url)
    assert main(["zoo", "download", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "run the command again to resume" in err
    # Nothing half-written under the model's name: the partial file waits in the folder's
    # hidden .zoo-partial/ (every write stays inside the folder).
    assert sorted(os.listdir(folder)) == [".zoo-partial", "readme.md"]
    part = folder / ".zoo-partial" / "cut.caffemodel.part"
    assert part.stat().st_size == 300_000
    assert _listing(tmp_path) == ["mymodel", "mymodel/.zoo-partial",
                                  "mymodel/.zoo-partial/cut.caffemodel.part", "mymodel/readme.md"]
    assert main(["zoo", "download", str(folder)]) == 0
    assert httpd.requests[-1] == ("/cut.caffemodel", "bytes=300000-")
    assert (folder / "cut.caffemodel").read_bytes() == PAYLOAD
    assert sorted(os.listdir(folder)) == ["cut.caffemodel", "readme.md"]


@pytest.mark.parametrize("file", ["short.caffemodel", "corrupt.caffemodel"])
def test_sha1_mismatch_is_refused(server, tmp_path, capsys, file):
    _, url = server
    folder = _model_dir(tmp_path, file, url)
    assert main(["zoo", "download", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "sha1 mismatch" in err and SHA1 in err and "discarded" in err
    assert sorted(os.listdir(folder)) == ["readme.md"]
    assert _listing(tmp_path) == ["mymodel", "mymodel/readme.md"]
    assert main(["zoo", "verify", str(folder)]) == 1


def test_a_corrupt_local_file_is_reported_and_replaced(server, tmp_path, capsys):
    _, url = server
    folder = _model_dir(tmp_path, "good.caffemodel", url)
    (folder / "good.caffemodel").write_bytes(b"not the model")
    assert main(["zoo", "verify", str(folder)]) == 1
    assert "mismatch" in capsys.readouterr().out
    assert main(["zoo", "download", str(folder)]) == 0
    assert (folder / "good.caffemodel").read_bytes() == PAYLOAD


def test_named_model_through_a_mirror(server, tmp_path, monkeypatch):
    """A known name gets its folder, readme.md and deploy prototxt; --mirror replaces the host."""
    _, url = server
    entry = dict(zoo.MODELS["bvlc_alexnet"], caffemodel="good.caffemodel", sha1=SHA1,
                 prototxt="good.prototxt", prototxt_url="http://x.invalid/good.prototxt",
                 prototxt_sha1=SHA1)
    monkeypatch.setitem(zoo.MODELS, "bvlc_alexnet", entry)
    monkeypatch.chdir(tmp_path)
    assert main(["zoo", "download", "bvlc_alexnet", "-root", "zoo", "-mirror", url]) == 0
    folder = tmp_path / "zoo" / "bvlc_alexnet"
    assert sorted(os.listdir(folder)) == ["good.caffemodel", "good.prototxt", "readme.md"]
    meta = zoo.read_frontmatter(folder)
    assert meta["sha1"] == SHA1 and meta["license"] == "unrestricted"


def test_errors_are_clear(server, tmp_path, capsys):
    _, url = server
    folder = _model_dir(tmp_path, "missing.caffemodel", url)
    assert main(["zoo", "download", str(folder)]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "readme.md").write_text("---\ncaffemodel: m.caffemodel\n"
                                       "caffemodel_url: http://127.0.0.1:9/m.caffemodel\n---\n")
    assert main(["zoo", "download", str(offline)]) == 1
    assert "cannot connect" in capsys.readouterr().err
    assert main(["zoo", "download", "no_such_model"]) == 1
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    (offline / "readme.md").write_text("no front matter here\n")
    with pytest.raises(ZooError, match="no front matter"):
        zoo.read_frontmatter(offline)


def test_the_index_has_bvlcs_published_models():
    """The reference models' URLs and sha1s as BVLC's readme.md files publish them."""
    assert zoo.MODELS["bvlc_reference_caffenet"]["sha1"] == \
        "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"
    assert zoo.MODELS["bvlc_googlenet"]["caffemodel_url"] == \
        "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel"
    for name in ("bvlc_alexnet", "bvlc_reference_rcnn_ilsvrc13", "finetune_flickr_style",
                 "resnet_50", "vgg_ilsvrc_16_layers"):
        assert zoo.MODELS[name]["caffemodel_url"].startswith("http")


def test_deploy_prototxt_sha1s_match_the_reference_models():
    from tests.conftest import shared_path
    for name, entry in zoo.MODELS.items():
        if name.startswith(("bvlc_", "finetune_")):
            path = shared_path("models", f"{name}.prototxt")
            assert zoo.sha1_of(path) == entry["prototxt_sha1"], name
