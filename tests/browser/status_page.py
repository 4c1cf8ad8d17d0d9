#!/usr/bin/env python3
"""Drives the status page in headless Chromium: signs in through the form, checks every job is
listed and nothing failed in the page, and saves a screenshot.

usage: status_page.py BASE_URL SECRET SCREENSHOT JOB[,JOB...]
Prints one JSON object; exits 1 when a check fails.
"""
import json
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

base, secret, screenshot, jobs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")

options = webdriver.ChromeOptions()
for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
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
    print(json.dumps({"shown": shown, "problems": problems, "screenshot": screenshot}))
finally:
    driver.quit()
sys.exit(1 if problems else 0)
