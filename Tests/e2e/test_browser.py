"""The "Transfer Files" page in real headless Chromium (Debian's chromium + chromium-driver, Selenium)."""
import hashlib
import os
import time
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT
from helpers import auth, pattern
from test_uploads import MiB, attachments

ARTIFACTS = ROOT / "Tests" / "artifacts"


@pytest.fixture
def browser(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.downloads = downloads
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


def sign_in(driver, server, token):
    driver.get(server.url + "/")
    field = WebDriverWait(driver, 20).until(EC.visibility_of_element_located((By.ID, "token")))
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    WebDriverWait(driver, 20).until(EC.visibility_of_element_located((By.ID, "case-list")))


def unfinished(server) -> list[dict]:
    return attachments(server)["uploads"]


def test_upload_reload_resume_verify_and_download(server, browser, tmp_path):
    data = pattern(50 * MiB, seed=40)
    path = tmp_path / "diagnostics.tar"
    path.write_bytes(data)
    sign_in(browser, server, server.customer)
    browser.get(f"{server.url}/cases/{server.case}")
    WebDriverWait(browser, 20).until(EC.text_to_be_present_in_element((By.ID, "case-title"), server.case))

    # Throttle the browser so that "mid-upload" exists on loopback.
    browser.set_network_conditions(offline=False, latency=5, download_throughput=512 * MiB,
                                   upload_throughput=4 * MiB)
    browser.find_element(By.ID, "files").send_keys(str(path))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(u["offset"] >= 16 * MiB for u in unfinished(server)):
        time.sleep(0.2)
    before_reload = unfinished(server)
    assert len(before_reload) == 1 and before_reload[0]["offset"] >= 16 * MiB, before_reload
    browser.save_screenshot(str(ARTIFACTS / "case-page-uploading.png"))

    browser.refresh()  # the page forgets everything but sessionStorage (token) and localStorage (the upload URL)
    WebDriverWait(browser, 20).until(EC.text_to_be_present_in_element((By.ID, "case-title"), server.case))
    time.sleep(0.5)
    settled = unfinished(server)[0]
    read_before = server.proc_io("rchar")
    browser.delete_network_conditions()
    browser.find_element(By.ID, "files").send_keys(str(path))  # the same file, picked again
    WebDriverWait(browser, 120).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, '#transfers li[data-state="verified"]')))
    received = server.proc_io("rchar") - read_before
    # It resumed: the server received only what was missing, not the whole 50 MiB again.
    assert received < len(data) - settled["offset"] + 9 * MiB, (received, settled)

    WebDriverWait(browser, 20).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#attachments button")))
    rows = attachments(server)
    assert [a["id"] for a in rows["attachments"]] == [settled["id"]], "the same upload finished; none was restarted"
    assert rows["attachments"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    browser.save_screenshot(str(ARTIFACTS / "case-page-verified.png"))

    browser.find_element(By.CSS_SELECTOR, "#attachments button").click()
    target = browser.downloads / "diagnostics.tar"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not target.exists() or list(browser.downloads.glob("*.crdownload"))):
        time.sleep(0.2)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


# Records the `Upload-Offset` of every request the page makes, in the page itself: Chrome's performance log would
# carry each request body too, which makes it useless for chunks of many MiB.
RECORD_OFFSETS = """
window.sentOffsets = window.sentOffsets || [];
if (!XMLHttpRequest.prototype.recordsOffsets) {
  const set = XMLHttpRequest.prototype.setRequestHeader;
  XMLHttpRequest.prototype.setRequestHeader = function (name, value) {
    if (name.toLowerCase() === 'upload-offset') window.sentOffsets.push(Number(value));
    return set.call(this, name, value);
  };
  XMLHttpRequest.prototype.recordsOffsets = true;
}
"""


def patch_offsets(driver) -> list[int]:
    """`Upload-Offset` of each PATCH the page sent since the last call, in order (`RECORD_OFFSETS`)."""
    return driver.execute_script("const sent = window.sentOffsets || []; window.sentOffsets = []; return sent;")


def upload_in_page(browser, server, path: Path) -> list[int]:
    """Picks `path` in the page, waits until it is verified, and returns the sizes of the chunks it was sent in."""
    browser.execute_script(RECORD_OFFSETS)
    patch_offsets(browser)  # drops what came before
    before = len(attachments(server)["attachments"])
    browser.find_element(By.ID, "files").send_keys(str(path))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(attachments(server)["attachments"]) == before:
        time.sleep(0.2)
    offsets = patch_offsets(browser)
    assert offsets and offsets == sorted(set(offsets)), offsets
    return [b - a for a, b in zip(offsets, offsets[1:] + [path.stat().st_size])]


def test_the_page_sizes_its_chunks_from_the_measured_rate(server, browser, tmp_path):
    """As `casefiles upload` does (`nextChunkSize` in app.js, `ChunkSizer` in the CLI): start at 8 MiB, aim each
    chunk at about 2 s, at most double or half per chunk, between 1 and 32 MiB. On loopback the chunks grow to the
    maximum; on a link throttled to 2 MiB/s they shrink to about 2 s each."""
    sign_in(browser, server, server.customer)
    browser.get(f"{server.url}/cases/{server.case}")
    WebDriverWait(browser, 20).until(EC.text_to_be_present_in_element((By.ID, "case-title"), server.case))

    # Random bytes: the page would gzip a compressible file, and the rate counts the file's bytes, not the wire's.
    fast = tmp_path / "fast.bin"
    fast.write_bytes(os.urandom(120 * MiB))
    sizes = upload_in_page(browser, server, fast)
    # Loopback carries far more than 16 MiB/s: each chunk doubles until the maximum (a slow disk could hold a step).
    assert sizes[0] == 8 * MiB and 32 * MiB in sizes[:-1], sizes
    assert all(a <= b <= 2 * a for a, b in zip(sizes, sizes[1:-1])), sizes  # the last is what was left

    browser.set_network_conditions(offline=False, latency=5, download_throughput=512 * MiB, upload_throughput=2 * MiB)
    slow = tmp_path / "slow.bin"
    slow.write_bytes(os.urandom(16 * MiB))
    sizes = upload_in_page(browser, server, slow)
    assert sizes[:2] == [8 * MiB, 4 * MiB], sizes  # 8 MiB took ~4 s: halved, the largest step
    assert all(MiB <= size <= 4 * MiB for size in sizes[1:]), sizes


def test_a_customer_of_another_account_cannot_see_the_case(server, browser):
    other = server.cli("users", "create", "oscar", "--role", "customer", "--account", "OTHER")
    sign_in(browser, server, other)
    assert server.case not in browser.find_element(By.ID, "case-list").text
    browser.get(f"{server.url}/cases/{server.case}")
    WebDriverWait(browser, 20).until(EC.text_to_be_present_in_element((By.ID, "message"), "No case with that number"))
    assert browser.find_element(By.ID, "attachments").text.count("\n") == 0  # header row only
    browser.save_screenshot(str(ARTIFACTS / "case-page-other-account.png"))


def test_a_closed_case_refuses_uploads_in_the_page(server, browser):
    requests.post(f"{server.url}/api/v1/cases/{server.case}/close", json={"subStatus": "Resolved"},
                  headers=auth(server.customer), timeout=10)
    sign_in(browser, server, server.customer)
    browser.get(f"{server.url}/cases/{server.case}")
    note = WebDriverWait(browser, 20).until(EC.visibility_of_element_located((By.ID, "closed-note")))
    assert "closed" in note.text and "Reopen" in note.text
    assert not browser.find_element(By.ID, "files").is_enabled()


def test_a_bundle_is_browsed_and_an_entry_previewed_as_text_never_as_html(server, browser):
    import gzip
    import io
    import tarfile
    from bundle_helpers import upload_archive, wait_indexed
    hostile = b"<img src=x onerror=\"document.title='pwned'\"><b>bold?</b>\n" * 2000  # 112 KB: head and tail both shown
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("logs/ic-server/<script>.log")
        info.size = len(hostile)
        tar.addfile(info, io.BytesIO(hostile))
    attachment = upload_archive(server, gzip.compress(raw.getvalue(), mtime=0), "support-bundle.tar.gz")
    assert wait_indexed(server, attachment)["state"] == "ready"

    sign_in(browser, server, server.engineer)
    browser.get(f"{server.url}/cases/{server.case}")
    browse = WebDriverWait(browser, 20).until(EC.element_to_be_clickable(
        (By.CSS_SELECTOR, "button[aria-label='Browse inside support-bundle.tar.gz']")))
    browse.click()
    WebDriverWait(browser, 20).until(EC.text_to_be_present_in_element((By.ID, "bundle-state"), "1 entries"))
    browser.find_element(By.XPATH, "//ul[@id='bundle-tree']//button[normalize-space()='▸ logs/']").click()
    browser.find_element(By.XPATH, "//ul[@id='bundle-tree']//button[normalize-space()='▸ ic-server/']").click()
    browser.find_element(By.XPATH, "//ul[@id='bundle-tree']//button[starts-with(normalize-space(), '<script>.log')]").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "preview-tail").text != "")
    head = browser.execute_script("return document.getElementById('preview-head').textContent")
    tail = browser.execute_script("return document.getElementById('preview-tail').textContent")
    assert head == hostile[:64 * 1024].decode() and tail == hostile[-(len(hostile) - 64 * 1024):].decode()
    assert browser.find_elements(By.CSS_SELECTOR, "#bundle img, #bundle b, #bundle script") == []
    assert browser.title != "pwned"
    browser.save_screenshot(str(ARTIFACTS / "bundle-preview.png"))
