#!/usr/bin/env python3
"""Drives the status page in headless Chromium: signs in through the form, checks every job is
listed and nothing failed in the page, that the unhealthy jobs come first and that their
occurrence strips show a visible, labelled cell of each kind named, and saves a screenshot.

usage: status_page.py BASE_URL SECRET SCREENSHOT JOB[,JOB...] [JOB=KIND[,JOB=KIND...]]
(KIND: missed, failed, coalesced, refused, ok). Prints one JSON object; exits 1 when a check
fails.
"""
import json
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

base, secret, screenshot, jobs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
cells = [pair.split("=", 1) for pair in sys.argv[5].split(",")] if len(sys.argv) > 5 else []

options = webdriver.ChromeOptions()
for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1600,1150"):
    options.add_argument(argument)
options.binary_location = "/usr/bin/chromium"
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
problems = []
try:
    driver.get(base + "/")
    field = WebDriverWait(driver, 20).until(expected_conditions.presence_of_element_located((By.ID, "secret")))
    field.send_keys(secret)
    field.submit()
    WebDriverWait(driver, 20).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "table.jobs")))
    shown = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "table.jobs td.job")]
    missing = [job for job in jobs if job not in shown]
    if missing:
        problems.append(f"jobs missing from the page: {missing}")
    rows = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr td.job")]
    unhealthy = [job for job, _ in cells]
    if sorted(rows[: len(unhealthy)]) != sorted(unhealthy):
        problems.append(f"unhealthy jobs {unhealthy} are not listed first: {rows}")
    labels = {}
    for job, kind in cells:
        found = driver.find_elements(By.CSS_SELECTOR, f"tr#job-{job} .strip .cell.{kind}")
        visible = [cell for cell in found if cell.is_displayed() and cell.size["width"] > 0]
        label = visible[-1].get_attribute("title") if visible else ""
        labels[job] = label
        if not visible or kind not in label:
            problems.append(f"{job}: no visible {kind} cell labelled {kind!r} (found {len(found)}: {label!r})")
        health = driver.find_element(By.CSS_SELECTOR, f"tr#job-{job} .health").text
        if "since" not in health:
            problems.append(f"{job}: its health does not say since when: {health!r}")
    if secret in driver.current_url:
        problems.append("the secret is in the URL")
    cookie = driver.get_cookie("edgecron_session") or {}
    if not cookie.get("httpOnly") or cookie.get("sameSite") != "Strict":
        problems.append(f"session cookie not HttpOnly/SameSite=Strict: {cookie}")
    if cookie.get("value") == secret:
        problems.append("the cookie holds the secret itself")
    errors = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    if errors:
        problems.append(f"errors in the page: {errors}")
    driver.save_screenshot(screenshot)
    print(json.dumps({"shown": shown, "labels": labels, "problems": problems, "screenshot": screenshot}))
finally:
    driver.quit()
sys.exit(1 if problems else 0)
