"""The walkthrough HTML in headless Chromium: click through every frame and check the
highlighted node and the numbers shown. Keeps a screenshot of one frame as an artifact."""
import pathlib
import shutil
import tempfile

import numpy as np
import pytest

import flowgrad as fg

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
ARTIFACTS = pathlib.Path(__file__).resolve().parents[1] / "out" / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (pathlib.Path(CHROMIUM).exists() and pathlib.Path(DRIVER).exists()),
                       reason="Debian's chromium and chromium-driver are not installed "
                              "(`make system-deps` installs them)"),
    pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed"),
]


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="flowgrad-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    # An explicit driver path: selenium must never try to download one (no network here).
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _seed_trace(w0=0.8, b0=-0.3, x0=1.5, t0=1.0, lam=0.1):
    nodes = fg.worked_example.univariate_logistic(w0, b0, lam)
    return fg.compile(nodes["loss"]).trace(x=x0, t=t0), nodes


def _state(driver):
    """(frame index, ids of highlighted nodes, caption text) as the page shows them."""
    frame = int(driver.find_element("tag name", "body").get_attribute("data-frame"))
    cur = [g.get_attribute("id") for g in driver.find_elements("css selector", "g.node.cur")]
    return frame, cur, driver.find_element("id", "caption").text


def test_click_through_every_frame(browser, tmp_path):
    from selenium.webdriver.common.keys import Keys
    tr, n = _seed_trace()
    page = fg.viz.walkthrough(tr, tmp_path / "backprop.html")
    browser.get(pathlib.Path(page).as_uri())
    total = int(browser.find_element("id", "slider").get_attribute("max")) + 1
    sig = 1 / (1 + np.exp(-0.9))
    zbar = (sig - 1.0) * sig * (1 - sig)
    seen = {}
    for k in range(total):
        frame, cur, caption = _state(browser)
        assert frame == k
        seen[k] = (cur, caption)
        if k < total - 1:
            browser.find_element("id", "next").click()
    # one frame per step: leaves, 10 ops, seed, 13 adjoints, done
    assert total == 26
    by_node = {tuple(cur): text for cur, text in seen.values()}
    z_fwd = seen[2]
    assert z_fwd[0] == [f"n{n['z'].id}"] and "= 0.9" in z_fwd[1]
    assert f"{sig:.4g}" in seen[3][1]                       # y = σ(0.9) = 0.7109
    seed = next(text for cur, text in seen.values() if "the seed" in text)
    assert "= 1" in seed
    zbar_text = next(t for c, t in seen.values() if "z̄ = Σ" in t)
    assert f"z̄ = {zbar:.4g}" in zbar_text and f"{sig * (1 - sig):.4g}" in zbar_text
    wbar = zbar * 1.5 + 0.1 * 0.8                          # w̄ = z̄ x + R̄ w: two terms
    w_text = by_node[(f"n{n['w'].id}",)]
    assert f"w̄ = {wbar:.4g}" in w_text and f"{zbar * 1.5:.4g} + 0.08" in w_text
    # the adjoint cell of w is hidden until its step, shown after it
    browser.find_element("id", "slider").send_keys(Keys.HOME)
    adj = browser.find_element("css selector", f"#n{n['w'].id}_adj text")
    assert not adj.is_displayed()
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_RIGHT)
    assert _state(browser)[0] == 1
    w_frame = next(k for k, (c, _) in seen.items() if c == [f"n{n['w'].id}"])
    browser.execute_script(f"show({w_frame})")
    assert _state(browser)[1] == [f"n{n['w'].id}"]
    assert adj.is_displayed() and adj.text == f"v̄ {wbar:.4g}"
    browser.find_element("id", "prev").click()
    assert _state(browser)[0] == w_frame - 1 and not adj.is_displayed()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "walkthrough_w_step.png"
    browser.execute_script(f"show({w_frame})")
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


_LABEL_PX = """
const sizes = Array.from(document.querySelectorAll('#graph svg g.edge text')).map(t =>
  parseFloat(t.getAttribute('font-size')) * t.getScreenCTM().a);
return [Math.min(...sizes), sizes.length];
"""


def test_edge_labels_of_a_two_layer_mlp_are_legible(browser, tmp_path):
    from test_walkthrough import mlp_trace
    tr, _, _ = mlp_trace(np.random.default_rng(3))
    page = fg.viz.walkthrough(tr, tmp_path / "mlp.html")
    browser.get(pathlib.Path(page).as_uri())
    frame = next(k for k, f in enumerate(fg.viz.walkthrough(tr).frames) if f["phase"] == "bw")
    browser.execute_script(f"show({frame})")
    smallest, count = browser.execute_script(_LABEL_PX)
    assert count >= 8 and smallest >= 10, smallest       # px on screen, at the default zoom
    browser.find_element("id", "zin").click()
    assert browser.execute_script(_LABEL_PX)[0] > smallest * 1.2
    browser.find_element("id", "zfit").click()           # the whole drawing in view, on request
    browser.find_element("id", "z100").click()
    assert abs(browser.execute_script(_LABEL_PX)[0] - smallest) < 1e-6
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "walkthrough_mlp.png"))
