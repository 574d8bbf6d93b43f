"""Drives the dashboard (`/dashboard`) of a Perdure node in a real headless Chromium.

Usage: python dashboard.py http://127.0.0.1:PORT,READER_KEY,OPERATOR_KEY,ADMIN_KEY [SCREENSHOT]

The node runs the sample app with those three API keys. The script starts instances and
signals an entity through the HTTP API, then uses only the page, through Selenium and
Debian's chromium-driver: the key bar, the instance list (counts, filters, paging), an
instance's page (fields, payloads, timeline, history table), its actions (a reader is
refused; an operator raises an event, suspends, resumes, terminates; an admin purges), the
entities page and the cluster page, checking each against the API. Prints one line per check
and "N passed, 0 failed"; exits non-zero on the first failure.
"""

import json
import sys
import time
import urllib.request
import uuid

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from checks import check, passed

BASE = "/runtime/webhooks/durabletask"


def call(origin, key, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(origin + BASE + path, data=data, method=method)
    req.add_header("x-functions-key", key)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, None


def until(what, fn, timeout=15):
    """Polls `fn` until it returns a truthy value; fails the check `what` after `timeout`."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                check(what, True)
                return last
        except WebDriverException as e:
            last = e
        time.sleep(0.1)
    check(what, False, f"still {last!r} after {timeout} s")


def text_of(d, css):
    els = d.find_elements(By.CSS_SELECTOR, css)
    return els[0].text if els else None


def accept_confirm(d):
    def alert():
        try:
            return d.switch_to.alert
        except NoAlertPresentException:
            return None
    until("a confirmation is asked", alert).accept()


def use_key(d, key, role):
    bar = d.find_element(By.ID, "keybar")
    if not bar.is_displayed():
        d.find_element(By.ID, "keybutton").click()
    box = d.find_element(By.ID, "keyinput")
    box.clear()
    box.send_keys(key)
    d.find_element(By.CSS_SELECTOR, "#keyform button").click()
    until(f"the page uses the {role}'s key",
          lambda: d.execute_script("return sessionStorage.getItem('perdure-key')") == key)


def drain_console(d):
    """Empties the browser's log (the refusals a step provoked on purpose)."""
    d.get_log("browser")


def main(arg, screenshot=None):
    origin, reader, operator, admin = arg.split(",")
    run = uuid.uuid4().hex[:6]

    # Instances to show: two finished, two waiting for an event, an entity.
    for i in range(2):
        s, _ = call(origin, operator, "POST", f"/orchestrators/HelloSequence/hello-{run}-{i}")
        assert s == 202, s
    for name in ("approve", "suspend"):
        s, _ = call(origin, operator, "POST", f"/orchestrators/Approval/{name}-{run}",
                    {"timeoutSeconds": 600})
        assert s == 202, s
    s, _ = call(origin, operator, "POST", f"/entities/Counter/dash-{run}?op=add", 7)
    assert s == 202, s
    for i in range(11):
        s, _ = call(origin, operator, "POST", f"/orchestrators/HelloSequence/page-{run}-{i:02}")
        assert s == 202, s
    for i in range(2):
        s, st = call(origin, operator, "GET", f"/instances/hello-{run}-{i}?waitForCompletion=20s")
        assert s == 200 and st["runtimeStatus"] == "Completed", (s, st)

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.binary_location = "/usr/bin/chromium"
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        # Without a key: the page loads, the API refuses, the key bar asks for one.
        d.get(origin + "/dashboard")
        until("without a key the key bar asks for one",
              lambda: d.find_element(By.ID, "keybar").is_displayed())
        check("the key bar says why", "API key" in d.find_element(By.ID, "keymsg").text,
              d.find_element(By.ID, "keymsg").text)
        drain_console(d)

        # A reader's key as the page's ?code=: the list shows the instances and the counts.
        d.get(f"{origin}/dashboard/?code={reader}#/instances")
        until("the list shows the started instances",
              lambda: d.find_elements(By.CSS_SELECTOR, f'tr[data-id="approve-{run}"]'))
        check("the key is taken out of the address bar", "code=" not in d.current_url,
              d.current_url)
        _, counts = call(origin, reader, "GET", "/instanceCounts")
        shown = {b.get_attribute("data-status"): int(b.find_element(By.TAG_NAME, "b").text)
                 for b in d.find_elements(By.CSS_SELECTOR, "#counts .count")}
        check("the counts are the API's", all(shown.get(k) == v for k, v in counts.items()),
              f"{shown} vs {counts}")
        check("the node reports ready", text_of(d, "#health") == "ready", text_of(d, "#health"))

        # Filters: status Running and the run's id prefix.
        for box in d.find_elements(By.CSS_SELECTOR, 'input[name="status"]'):
            if box.get_attribute("value") == "Running" and not box.is_selected():
                box.click()
        prefix = d.find_element(By.NAME, "prefix")
        prefix.clear()
        prefix.send_keys(f"approve-{run}")
        d.find_element(By.ID, "apply").click()
        until("status and prefix filters leave only the waiting instance",
              lambda: [r.get_attribute("data-id") for r in
                       d.find_elements(By.CSS_SELECTOR, "#instance-table tbody tr[data-id]")]
              == [f"approve-{run}"])

        # Paging: 11 instances, 10 per page.
        for box in d.find_elements(By.CSS_SELECTOR, 'input[name="status"]'):
            if box.is_selected():
                box.click()
        prefix.clear()
        prefix.send_keys(f"page-{run}")
        Select(d.find_element(By.NAME, "top")).select_by_value("10")
        d.find_element(By.ID, "apply").click()
        rows = lambda: [r.get_attribute("data-id") for r in
                        d.find_elements(By.CSS_SELECTOR, "#instance-table tbody tr[data-id]")]
        first = until("the first page has 10 rows", lambda: len(rows()) == 10 and rows())
        d.find_element(By.CSS_SELECTOR, ".pager .next").click()
        second = until("next shows the 11th", lambda: len(rows()) == 1 and rows())
        check("the two pages hold the 11 instances",
              sorted(first + second) == [f"page-{run}-{i:02}" for i in range(11)], first + second)
        check("the pager says page 2", text_of(d, ".pager .page-number") == "page 2")
        d.find_element(By.CSS_SELECTOR, ".pager .prev").click()
        until("previous shows the first page again", lambda: rows() == first)

        # An instance's page: fields, input, timeline and history.
        d.get(f"{origin}/dashboard/#/instances/approve-{run}")
        until("the instance page shows it Running", lambda: text_of(d, "#status") == "Running")
        check("its input is shown", '"timeoutSeconds": 600' in text_of(d, "#input"),
              text_of(d, "#input"))
        until("the timeline has the timer",
              lambda: any("timer until" in r.text for r in d.find_elements(By.CSS_SELECTOR, ".tl-label")))
        events = [r.find_elements(By.TAG_NAME, "td")[1].text
                  for r in d.find_elements(By.CSS_SELECTOR, "#history tbody tr")]
        check("the history table lists the events", "ExecutionStarted" in events
              and "TimerCreated" in events, events)

        # A reader cannot terminate: the page says so and nothing changes.
        d.find_element(By.ID, "terminate").click()
        accept_confirm(d)
        until("a reader's terminate is refused with 403",
              lambda: "403" in (d.find_element(By.ID, "flash").text or ""))
        drain_console(d)
        _, st = call(origin, reader, "GET", f"/instances/approve-{run}")
        check("the refused terminate did nothing", st["runtimeStatus"] == "Running", st)

        # An operator raises the event: the instance completes and the page shows its output.
        use_key(d, operator, "operator")
        until("the page shows the instance again", lambda: text_of(d, "#status") == "Running")
        d.find_element(By.ID, "event-name").send_keys("Approval")
        d.find_element(By.ID, "event-data").send_keys("true")
        d.find_element(By.ID, "raise").click()
        accept_confirm(d)
        until("the raised event completes the instance",
              lambda: text_of(d, "#status") == "Completed", timeout=20)
        check("its output is shown", text_of(d, "#output") == '"approved"', text_of(d, "#output"))
        check("the timeline shows the event",
              any(r.text == "event Approval" for r in d.find_elements(By.CSS_SELECTOR, ".tl-label")))

        # Suspend, resume, terminate with a reason.
        d.get(f"{origin}/dashboard/#/instances/suspend-{run}")
        until("the second instance is Running", lambda: text_of(d, "#status") == "Running")
        d.find_element(By.ID, "suspend").click()
        accept_confirm(d)
        until("suspend takes effect", lambda: text_of(d, "#status") == "Suspended")
        d.find_element(By.ID, "resume").click()
        accept_confirm(d)
        until("resume takes effect", lambda: text_of(d, "#status") == "Running")
        d.find_element(By.ID, "reason").send_keys("from the dashboard")
        d.find_element(By.ID, "terminate").click()
        accept_confirm(d)
        until("terminate takes effect", lambda: text_of(d, "#status") == "Terminated")
        _, st = call(origin, reader, "GET", f"/instances/suspend-{run}")
        check("the API agrees", st["runtimeStatus"] == "Terminated" and
              "from the dashboard" in json.dumps(st["output"]), st)

        # Purge: refused to an operator, done by the admin.
        d.find_element(By.ID, "purge").click()
        accept_confirm(d)
        until("an operator's purge is refused", lambda: "403" in d.find_element(By.ID, "flash").text)
        drain_console(d)

        # An operator restarts under a new id (the default): the page follows the new instance.
        d.find_element(By.ID, "restart").click()
        accept_confirm(d)
        until("restart leads to the new instance",
              lambda: text_of(d, "#instance-id") not in (None, f"suspend-{run}")
              and text_of(d, "#instance-id"))
        d.get(f"{origin}/dashboard/#/instances/suspend-{run}")
        until("back on the terminated instance", lambda: text_of(d, "#status") == "Terminated")
        use_key(d, admin, "admin")
        until("the page shows it again", lambda: text_of(d, "#status") == "Terminated")
        d.find_element(By.ID, "purge").click()
        accept_confirm(d)
        until("after the purge the page goes back to the list",
              lambda: d.current_url.endswith("#/instances"))
        s, _ = call(origin, reader, "GET", f"/instances/suspend-{run}")
        check("the purged instance is gone", s == 404, s)

        # Entities.
        d.get(f"{origin}/dashboard/#/entities")
        row = until("the entity is listed", lambda: [
            r for r in d.find_elements(By.CSS_SELECTOR, "#entity-table tbody tr")
            if f"dash-{run}" in r.text])
        cells = [c.text for c in row[0].find_elements(By.TAG_NAME, "td")]
        check("the entity's state and backlog are shown",
              cells[0] == "counter" and cells[2] == "7" and cells[4] == "0", cells)

        # Cluster.
        d.get(f"{origin}/dashboard/#/cluster")
        until("the partition table is shown",
              lambda: d.find_elements(By.CSS_SELECTOR, "#partition-table tbody tr"))
        req = urllib.request.Request(origin + "/cluster/partitions")
        req.add_header("x-functions-key", reader)
        with urllib.request.urlopen(req, timeout=10) as r:
            parts = json.loads(r.read())
        rows = d.find_elements(By.CSS_SELECTOR, "#partition-table tbody tr")
        check("one row per partition", len(rows) == len(parts["partitions"]),
              f"{len(rows)} vs {len(parts['partitions'])}")
        owners = {r.find_elements(By.TAG_NAME, "td")[1].text for r in rows}
        check("every partition has this node as owner", owners == {parts["node"]}, owners)
        live = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#node-table tbody tr")]
        check("the node table shows the live node", len(live) == 1 and " yes " in f" {live[0]} ",
              live)

        # A chain of three activities: three bars, one after the other.
        d.get(f"{origin}/dashboard/#/instances/hello-{run}-0")
        until("a finished chain's page is shown", lambda: text_of(d, "#status") == "Completed")
        labels = [r.text for r in d.find_elements(By.CSS_SELECTOR, ".tl-label")]
        check("the timeline has a bar per activity", labels == ["activity SayHello"] * 3, labels)
        bars = d.find_elements(By.CSS_SELECTOR, ".tl-bar")
        lefts = [float(b.value_of_css_property("left").rstrip("px")) for b in bars]
        widths = [b.size["width"] for b in bars]
        check("the bars follow one another",
              all(a < b for a, b in zip(lefts, lefts[1:])) and all(w > 0 for w in widths),
              (lefts, widths))
        check("the output is the chain's",
              json.loads(text_of(d, "#output")) == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"],
              text_of(d, "#output"))
        if screenshot:
            d.save_screenshot(screenshot)

        # An address that does not decode: a message, not a blank page.
        d.get(f"{origin}/dashboard/#/instances/100%")
        until("a malformed address says so",
              lambda: "not an instance address" in d.find_element(By.ID, "flash").text)
        logs = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        check("no error in the browser console besides the refusals provoked", not logs, logs)
    finally:
        d.quit()

    print(f"{passed()} passed, 0 failed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
