"""caffe view: the page's content, and the page in a real headless Chromium."""
import json
import os
import re
import shutil
import tempfile

import numpy as np
import pytest

from caffe import view
from caffe.formats import read_net_param
from caffe.tools.caffe import main
from tests.conftest import shared_path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="graphviz's dot is absent (make test installs it)")


def _layers(path):
    return [layer.name for layer in read_net_param(str(path)).layer]


def _data(page):
    return json.loads(re.search(r'<script id="net-data" type="application/json">(.*?)</script>',
                                page, re.S).group(1).replace("<\\/", "</"))


@needs_dot
def test_page_has_every_layer_with_computed_shapes(tmp_path):
    model = shared_path("models", "bvlc_googlenet.prototxt")
    out = tmp_path / "page.html"
    assert main(["view", str(model), "-o", str(out)]) == 0
    page = out.read_text()
    data = _data(page)
    names = _layers(model)
    assert [data["nodes"][k]["name"] for k in data["order"]] == names
    conv1 = data["nodes"]["conv1/7x7_s2_Convolution"]
    assert conv1["tops"] == [["conv1/7x7_s2", "10 \u00d7 64 \u00d7 112 \u00d7 112"]]
    assert conv1["params"][0][:2] == ["blob 0", "64 \u00d7 3 \u00d7 7 \u00d7 7"]
    assert "kernel_size: 7" in conv1["text"]
    assert data["nodes"]["pool5/7x7_s1_blob"]["shape"] == "10 \u00d7 1024 \u00d7 1 \u00d7 1"
    for name in names:
        assert f"<title>{name}_" in page                   # a graphviz node for each layer


def _chromium_or_skip():
    if os.path.exists(CHROMIUM) and os.path.exists(DRIVER):
        return
    message = "chromium and chromium-driver are absent (make test installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; CI must run the browser test")
    pytest.skip(message)


@needs_dot
@pytest.mark.slow
def test_googlenet_in_headless_chromium(tmp_path):
    _chromium_or_skip()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is absent "
                                    "(pip install 'pycaffe[view]')")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    model = shared_path("models", "bvlc_googlenet.prototxt")
    server = view.serve(view.build_page(str(model)), background=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(dir=tmp_path)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=DRIVER)
    browser = webdriver.Chrome(options=options, service=service)
    try:
        browser.set_page_load_timeout(60)
        browser.get(server.url)
        WebDriverWait(browser, 30).until(
            lambda b: b.execute_script("return document.body.dataset.ready") == "1")
        assert "GoogleNet" in browser.title
        # Every layer is in the drawn graph and in the layer list.
        titles = browser.execute_script(
            "return Array.from(document.querySelectorAll('#graph g.node > title'))"
            ".map(t => t.textContent)")
        listed = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#layers li")]
        names = _layers(model)
        layer_nodes = {t for t in titles if not t.endswith("_blob")}
        for name in names:
            assert any(t.startswith(name + "_") for t in layer_nodes), name
        assert [item.split(" (")[0] for item in listed] == names
        # Search highlights matching nodes and Enter selects the first into the panel.
        box = browser.find_element(By.ID, "search")
        box.send_keys("inception_4c/output")
        hits = browser.find_elements(By.CSS_SELECTOR, "#graph g.node.hit")
        assert len(hits) >= 2                              # the Concat layer and its blob
        box.send_keys(Keys.ENTER)
        details = browser.find_element(By.ID, "details").text
        assert "inception_4c/output" in details and "\u00d7" in details
        # Zoom changes the drawing's size.
        width = float(browser.find_element(By.CSS_SELECTOR, "#graph svg").get_attribute("width"))
        browser.find_element(By.ID, "zoom-in").click()
        zoomed = float(browser.find_element(By.CSS_SELECTOR, "#graph svg").get_attribute("width"))
        assert zoomed == pytest.approx(width * 1.25, rel=1e-3)
        shot = tmp_path / "shot.png"
        assert browser.save_screenshot(str(shot))
    finally:
        browser.quit()
        server.shutdown()
    from PIL import Image
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 600
    assert pixels.std() > 20                               # not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50   # graph colours, text, header
