"""--mode=explore in a real browser: headless Chromium (Debian's chromium, chromium-driver) through selenium.

Loads the page, draws a new seed, picks two samples, walks between them, uploads images for image to z,
and saves a screenshot. DCGAN_TF_EXPLORE_SAVED_MODEL points it at another export and
DCGAN_TF_EXPLORE_SCREENSHOT says where the screenshot goes (docs/make_pictures.sh uses both for README).
"""

import io
import os
import shutil
import socket
import tempfile
import urllib.request

import imageio.v3 as iio
import numpy as np
import pytest
from test_explore import make_export

from dcgan_tf import export
from dcgan_tf.explore import logic as explore

gradio = pytest.importorskip(
    'gradio', reason="the explore extra is not installed: pip install -e '.[explore]'"
)
webdriver = pytest.importorskip(
    'selenium.webdriver', reason="selenium is not installed: pip install -e '.[explore]'"
)
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason='no headless browser: apt-get install chromium chromium-driver'
)
TIMEOUT = 60
# Without the background-networking flags Chromium keeps calling home, which a closed network refuses.
CHROMIUM_FLAGS = (
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-dev-shm-usage',
    '--window-size=1400,2700',
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@pytest.fixture(scope='module')
def page(tmp_path_factory):
    """(browser, url, generator): the explorer served in this process, a fresh Chromium profile on it."""
    from selenium.webdriver.chrome.service import Service

    from dcgan_tf.explore import app as explore_app

    path = os.environ.get('DCGAN_TF_EXPLORE_SAVED_MODEL') or make_export(
        str(tmp_path_factory.mktemp('export') / 'saved_model')
    )
    generator = export.load(path)
    app = explore_app.build_app(generator, '/'.join(os.path.normpath(path).split(os.sep)[-2:]), seed=0)
    url = explore_app.launch(app, '127.0.0.1', _free_port(), block=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix='chromium_profile_')
    for flag in (*CHROMIUM_FLAGS, f'--user-data-dir={profile}'):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        browser.get(url)
        yield browser, url, generator
    finally:
        browser.quit()
        app.close()
        shutil.rmtree(profile, ignore_errors=True)


def _sources(browser, elem_id: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [img.get_attribute('src') for img in browser.find_elements(By.CSS_SELECTOR, f'#{elem_id} img')]


def _fetch(src: str) -> np.ndarray:
    with urllib.request.urlopen(src, timeout=TIMEOUT) as response:  # noqa: S310 - our own local server.
        picture = iio.imread(io.BytesIO(response.read()))
    return picture[..., None] if picture.ndim == 2 else picture


def _wait(browser, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, TIMEOUT).until(lambda _: condition(), message=f'waiting for {what}')


def _status(browser) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, 'status').text


def _click(browser, elem_id: str, index: int | None = None) -> None:
    from selenium.webdriver.common.by import By

    if index is None:
        browser.find_element(By.ID, elem_id).click()
    else:
        browser.find_elements(By.CSS_SELECTOR, f'#{elem_id} .thumbnail-item')[index].click()


def test_explorer_in_a_browser(page, tmp_path):
    from selenium.webdriver.common.by import By

    browser, _, generator = page
    num = explore.GRID_SIZE
    # --- the page loads with the grid of seed 0 ---
    _wait(browser, lambda: len(_sources(browser, 'grid')) == num, 'the first grid')
    assert 'dcgan_tf explorer' in browser.page_source
    first = _sources(browser, 'grid')

    # --- "new seed" draws seed 1's samples, the ones --mode=sample --seed=1 draws ---
    _click(browser, 'new_seed')
    _wait(
        browser,
        lambda: len(_sources(browser, 'grid')) == num and _sources(browser, 'grid') != first,
        'a new grid',
    )
    assert 'Seed 1' in _status(browser)
    expected, _ = generator.sample(num, 1)
    np.testing.assert_array_equal(_fetch(_sources(browser, 'grid')[5]), explore.enlarge(expected[5]))

    # --- pick two samples, walk between them ---
    _click(browser, 'grid', 0)
    _wait(browser, lambda: len(_sources(browser, 'picks')) == 1, 'the first pick')
    _click(browser, 'grid', 5)
    _wait(browser, lambda: len(_sources(browser, 'picks')) == 2, 'the second pick')
    _click(browser, 'walk')
    _wait(browser, lambda: len(_sources(browser, 'frames')) == 8, 'the walk')
    frames = [_fetch(src) for src in _sources(browser, 'frames')]
    np.testing.assert_array_equal(frames[0], explore.enlarge(expected[0]))  # From pick 1 ...
    np.testing.assert_array_equal(frames[-1], explore.enlarge(expected[5]))  # ... to pick 2,
    assert len({f.tobytes() for f in frames}) > 2  # through other images.
    assert browser.find_element(By.ID, 'walk_gif').is_displayed()

    # --- A - B + C: the two picks are group A, then one sample each for B and C ---
    for group, index in (('A', None), ('B', 3), ('C', 13)):
        if index is not None:
            _click(browser, 'grid', index)
            _wait(browser, lambda: len(_sources(browser, 'picks')) == 1, f'the pick for {group}')
        _click(browser, f'set_{group}')
        _wait(browser, lambda g=group: f'Group {g} set' in _status(browser), f'group {group}')
    _click(browser, 'arithmetic')
    _wait(browser, lambda: len(_sources(browser, 'means')) == 3, 'the arithmetic')
    assert len(_sources(browser, 'arithmetic_result')) == 1

    # --- image to z: a wrong size is a message in the page; a right one gets a trajectory ---
    resolution = int(generator.metadata['resolution'])
    upload = browser.find_element(By.CSS_SELECTOR, 'input[type=file]')
    wrong = tmp_path / 'wrong.png'
    iio.imwrite(wrong, np.zeros((resolution + 4, resolution), np.uint8))
    upload.send_keys(str(wrong))
    _click(browser, 'invert')
    _wait(browser, lambda: 'but this generator makes' in _status(browser), 'the wrong-size message')
    browser.find_element(By.CSS_SELECTOR, '#upload button[aria-label="Remove Image"]').click()
    right = tmp_path / 'right.png'
    iio.imwrite(right, expected[3][..., 0] if expected.shape[-1] == 1 else expected[3])
    browser.find_element(By.CSS_SELECTOR, 'input[type=file]').send_keys(str(right))
    _click(browser, 'invert')
    _wait(
        browser,
        lambda: len(_sources(browser, 'trajectory')) == 1 + explore.INVERT_SNAPSHOTS,
        'the trajectory',
    )
    assert 'Found z' in _status(browser)

    screenshot = os.environ.get('DCGAN_TF_EXPLORE_SCREENSHOT') or str(tmp_path / 'explore.png')
    browser.execute_script('window.scrollTo(0, 0)')
    assert browser.save_screenshot(screenshot)
    assert iio.imread(screenshot).shape[1] >= 1000
