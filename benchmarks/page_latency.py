"""Time from choosing a 12 MP photo on the web page to the answer shown, in Chromium.

Starts ``rxvision serve`` (as benchmarks/load.py does) and drives the page in headless
Chromium (Debian's chromium + chromedriver, through Selenium). Per repeat: the photo is
chosen in the file input (the page records ``performance.now()`` at its ``change``
event), the Identify button is clicked, and the time is taken when the results section
appears (a MutationObserver in the page). Explanations are off, as on the page by
default. Reports the median and all repeats.

Example:
    python benchmarks/page_latency.py --tta 4 --repeats 7
    python benchmarks/page_latency.py --model runs/c3pi-onnx --backend onnx --tta 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import free_port, start_server, stop_server  # noqa: E402
from photo_latency import phone_photo  # noqa: E402

from rxvision.identify.bundled import resolve_model_path  # noqa: E402

WATCH = """
window.__t0 = null; window.__t1 = null;
document.getElementById('photo').addEventListener('change',
    () => { window.__t0 = performance.now(); }, {once: true});
const results = document.getElementById('results');
new MutationObserver(() => {
    if (!results.hidden && window.__t1 === null) window.__t1 = performance.now();
}).observe(results, {attributes: true});
"""


def browser() -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=412,915", f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")
                                            or "/usr/bin/chromedriver"), options=options)


def one(driver: object, url: str, photo: Path) -> dict[str, float]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: d.find_element(By.ID, "model-id").text.startswith("model "))
    driver.execute_script(WATCH)
    driver.find_element(By.ID, "photo").send_keys(str(photo))
    driver.find_element(By.ID, "identify").click()
    wait.until(lambda d: d.execute_script("return window.__t1 !== null"))
    t0, t1 = driver.execute_script("return [window.__t0, window.__t1]")
    status = driver.find_element(By.ID, "status").text  # "Done in N ms": the server's total
    return {"page_ms": round(t1 - t0, 1), "status": status,
            "verdict": driver.find_element(By.ID, "verdict").text.split("\n")[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="artifact or ONNX export (default: the bundled model)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    p.add_argument("--tta", type=int, choices=[1, 2, 4])
    p.add_argument("--threads", type=int)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.max_batch, args.max_wait_ms, args.startup_timeout = 16, 5.0, 300.0
    model = resolve_model_path(args.model)
    with tempfile.TemporaryDirectory(prefix="rxvision-page-") as tmp:
        photo = Path(tmp) / "phone.jpg"
        data = phone_photo(sorted((REPO / "data/sample/images").glob("*.jpg"))[0])
        photo.write_bytes(data)
        port = free_port()
        server = start_server(args, model, port, Path(tmp) / "server.log")
        driver = browser()
        try:
            one(driver, f"http://127.0.0.1:{port}/", photo)  # warm-up (first page, caches)
            runs = [one(driver, f"http://127.0.0.1:{port}/", photo)
                    for _ in range(args.repeats)]
        finally:
            driver.quit()
            stop_server(server)
    times = [r["page_ms"] for r in runs]
    report = {"model": str(model), "backend": args.backend, "tta": args.tta,
              "photo": f"4032x3024 JPEG, {len(data)} bytes",
              "median_page_ms": statistics.median(times), "runs": runs,
              "load_average": [round(v, 2) for v in os.getloadavg()],
              "measured": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
