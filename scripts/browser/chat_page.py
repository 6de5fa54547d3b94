"""Drive forkhorn's chat page in headless Chromium (run by scripts/browser-test.sh).

Opens the page, sends a message, checks that the reply grows word by word
and finishes, takes screenshots at desktop and phone width, then stops the
server and checks that the next message shows a visible error line.
Exits non-zero, with a reason, on any failure.
"""

import argparse
import os
import signal
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
MESSAGE = "Hello from the browser test! How does a prefork server work?"
SECOND_MESSAGE = "Are you still there?"


def fail(reason):
    print(f"FAILED: {reason}", file=sys.stderr)
    sys.exit(1)


def beside(path, suffix):
    stem, ext = os.path.splitext(path)
    return f"{stem}-{suffix}{ext or '.png'}"


def is_running(pid):
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def start_browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1100,800",
    ]:
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(service=service, options=options)


def assistant_bubbles(driver):
    return driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")


def send(driver, text):
    box = driver.find_element(By.ID, "message")
    box.clear()
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def watch_reply(driver, index, timeout_s):
    """Poll reply `index` until it is done or failed; the lengths seen on the way."""
    lengths = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        bubbles = assistant_bubbles(driver)
        if len(bubbles) > index:
            bubble = bubbles[index]
            state = bubble.get_attribute("data-state")
            text = bubble.text
            if not lengths or lengths[-1] != len(text):
                lengths.append(len(text))
            if state:
                return state, text, lengths
        time.sleep(0.03)
    fail(f"reply {index} did not finish within {timeout_s} s (lengths seen: {lengths})")


def main():
    # `timeout` ends us with TERM: leave through `finally`, which quits the browser.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("FAILED: stopped by SIGTERM (timed out)"))
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--screenshot", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--profile", required=True)
    args = parser.parse_args()

    driver = start_browser(args.profile)
    try:
        driver.set_page_load_timeout(20)
        driver.get(args.url)
        wait = WebDriverWait(driver, 10)
        wait.until(lambda d: d.find_element(By.ID, "message").is_displayed())
        wait.until(lambda d: "checking" not in d.find_element(By.ID, "backend").text)
        backend = driver.find_element(By.ID, "backend").text
        if backend != "simulated":
            fail(f"the header shows backend {backend!r}, expected 'simulated'")
        session = driver.execute_script("return localStorage.getItem('forkhorn-chat-session')")
        if not session:
            fail("no session id in localStorage")

        send(driver, MESSAGE)
        state, reply, lengths = watch_reply(driver, 0, 30)
        if state != "done":
            error = driver.find_element(By.ID, "error").text
            fail(f"the reply ended {state!r}: {error!r}")
        if len(reply.split()) < 20:
            fail(f"the reply is too short: {reply!r}")
        if MESSAGE not in reply:
            fail(f"the reply does not mention the message: {reply!r}")
        growing = [n for n in lengths if 0 < n < len(reply)]
        if len(growing) < 5:
            fail(f"the reply did not appear token by token (lengths seen: {lengths})")
        if driver.find_element(By.ID, "error").is_displayed():
            fail("an error line shows after a good reply")
        user = driver.find_elements(By.CSS_SELECTOR, ".msg.user")
        if not user or user[0].text != MESSAGE:
            fail("the person's message is not shown")
        print(f"reply streamed in {len(growing)} steps: {reply!r}")
        driver.save_screenshot(args.screenshot)

        driver.set_window_size(390, 844)
        time.sleep(0.3)
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        if overflow > 0:
            fail(f"at phone width the page scrolls sideways by {overflow} px")
        driver.save_screenshot(beside(args.screenshot, "phone"))

        # The server goes away: the next message must show an error, not hang.
        os.kill(args.server_pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and is_running(args.server_pid):
            time.sleep(0.1)
        if is_running(args.server_pid):
            fail("the server did not stop within 10 s")
        send(driver, SECOND_MESSAGE)
        state, _, _ = watch_reply(driver, 1, 30)
        error = driver.find_element(By.ID, "error")
        if state != "failed" or not error.is_displayed() or not error.text:
            fail(f"no visible error once the server was gone (state {state!r}, error {error.text!r})")
        print(f"with the server gone the page says: {error.text!r}")
        WebDriverWait(driver, 5).until(
            lambda d: "bad" in (d.find_element(By.ID, "dot").get_attribute("class") or "")
        )
        driver.save_screenshot(beside(args.screenshot, "error"))
    except WebDriverException as e:
        fail(f"webdriver: {e.msg}")
    finally:
        driver.quit()
    print("browser test passed")


if __name__ == "__main__":
    main()
