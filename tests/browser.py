"""Opens a page from disk in headless Chromium (Debian's `chromium` package,
driven by Playwright; .ci/run installs both) and reports what a reader
would see go wrong: images that did not load and console errors. Tests that
use it skip, saying why, where no browser is installed."""

import importlib.util
import pathlib
import shutil

import pytest

CHROMIUM = ('chromium', 'chromium-browser')


def chromium_path() -> str:
  """The browser's path, or a skip naming what is missing."""
  if importlib.util.find_spec('playwright') is None:
    pytest.skip('no browser test: the playwright package is not installed '
                '(pip install playwright)')
  for name in CHROMIUM:
    path = shutil.which(name)
    if path:
      return path
  pytest.skip('no browser test: no Chromium on PATH (apt-get install chromium)')


def open_page(html_path: str) -> dict:
  """{'title', 'images': [(src, loaded)], 'console_errors': [...],
  'page_errors': [...]} of the page at html_path, after it has loaded."""
  from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel
  executable = chromium_path()
  with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=executable, headless=True)
    try:
      page = browser.new_page()
      console_errors, page_errors = [], []
      page.on('console', lambda m: console_errors.append(m.text) if m.type == 'error' else None)
      page.on('pageerror', lambda e: page_errors.append(str(e)))
      page.goto(pathlib.Path(html_path).resolve().as_uri(), wait_until='load')
      images = page.evaluate('Array.from(document.images).map('
                             'i => [i.getAttribute("src"), i.complete && i.naturalWidth > 0])')
      return {'title': page.title(), 'images': [tuple(i) for i in images],
              'console_errors': console_errors, 'page_errors': page_errors}
    finally:
      browser.close()


def check_page(html_path: str, min_images: int = 1) -> dict:
  """Asserts the page loads with every image and no errors; returns open_page's."""
  seen = open_page(html_path)
  assert len(seen['images']) >= min_images, seen
  broken = [src for src, loaded in seen['images'] if not loaded]
  assert not broken, f'images that did not load: {broken}'
  assert not seen['console_errors'] and not seen['page_errors'], seen
  return seen
