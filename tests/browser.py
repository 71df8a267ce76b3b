"""The Prefect UI driven as a person would, in Debian's Chromium through Playwright.

Playwright never downloads a browser here: it launches `/usr/bin/chromium` (Debian's
`chromium` package). Selectors are roles and visible text, never CSS classes. Every step
leaves a screenshot (`<test>-NN-<step>.png`, or `...-FAILED.png` with the Prefect server's
and worker's logs when it failed) in one directory: `$SLIPWAY_TEST_ARTIFACTS/ui-screenshots`,
else `tests/artifacts/ui-screenshots` (ignored by git).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

from playwright.sync_api import Browser, Locator, Page, Playwright, Response, expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parent.parent
# The machine is slow and shared: a page or a state may take long to show.
STEP_TIMEOUT_MS = 60_000
RUN_TIMEOUT_MS = 420_000
expect.set_options(timeout=STEP_TIMEOUT_MS)
RUN_PATH = re.compile(r"/runs/flow-run/([0-9a-f-]{36})")
Role = Literal["textbox", "switch"]
T = TypeVar("T")


def screenshot_dir() -> Path:
    """Where the screenshots go, emptied of an earlier session's."""
    base = os.environ.get("SLIPWAY_TEST_ARTIFACTS")
    path = (Path(base) if base else REPO / "tests" / "artifacts") / "ui-screenshots"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def off_browser_loop(call: Callable[[], T]) -> T:
    """`call()` in a thread of its own, in this thread's context (Prefect's settings, such
    as the API URL, are context variables). Playwright's sync API keeps its event loop
    running on the test's thread, where Prefect's sync-or-async functions would return
    coroutines."""
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, call).result()


def launch_chromium(playwright: Playwright, home: Path) -> Browser:
    """Chromium with `home` as its HOME, config and cache directories: it writes
    crash-report settings and a dconf cache there, not in the user's home. (Not TMPDIR:
    its socket's path must stay short.)"""
    dirs = {"XDG_CONFIG_HOME": ".config", "XDG_CACHE_HOME": ".cache"}
    env: dict[str, str | float | bool] = {**os.environ, "HOME": str(home)}
    for variable, name in dirs.items():
        (home / name).mkdir(parents=True, exist_ok=True)
        env[variable] = str(home / name)
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, env=env
    )


class PrefectUI:
    """One browser page on the Prefect UI, with a screenshot after each step."""

    def __init__(
        self, browser: Browser, ui_url: str, shots: Path, prefix: str, logs: Path | None = None
    ) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.set_default_timeout(STEP_TIMEOUT_MS)
        self.ui_url = ui_url.rstrip("/")
        self.shots = shots
        self.prefix = prefix
        self.logs = logs
        self.count = 0
        # What the page was told by the API when it failed: the UI shows only "Oops".
        self.api_errors: list[Response] = []
        self.page.on("response", self._record_error)

    def _record_error(self, response: Response) -> None:
        if response.status >= 400 and "/api/" in response.url:
            self.api_errors.append(response)

    def _keep_server_logs(self) -> None:
        """The Prefect server's and worker's logs beside the screenshots: the harness's
        copy goes when a later session starts."""
        for log in self.logs.glob("prefect-*.log") if self.logs else []:
            with contextlib.suppress(OSError):
                shutil.copy(log, self.shots / f"{self.prefix}-{log.name}")

    def _api_error_lines(self) -> list[str]:
        lines = []
        for response in self.api_errors:
            body = ""
            with contextlib.suppress(Exception):
                body = ": " + response.text()[:300]
            lines.append(f"{response.status} {response.request.method} {response.url}{body}")
        return lines

    def close(self) -> None:
        self.page.close()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Page]:
        """A step of the story: its screenshot is taken once it is done (or failed)."""
        self.count += 1
        stem = f"{self.prefix}-{self.count:02d}-{name}"
        try:
            yield self.page
        except BaseException as exc:
            shot = self.shots / f"{stem}-FAILED.png"
            with contextlib.suppress(Exception):  # the step's own error is the one to see
                self.page.screenshot(path=shot, full_page=True)
            exc.add_note(f"screenshot: {shot}")
            for line in self._api_error_lines():
                exc.add_note(f"API error seen by the page: {line}")
            self._keep_server_logs()
            raise
        self.page.screenshot(path=self.shots / f"{stem}.png", full_page=True)

    def field(self, name: str, role: Role, within: Locator | None = None) -> Locator:
        """The input of a form property by its label: the innermost block holding both
        (the UI's labels are not tied to their inputs)."""
        scope = within if within is not None else self.page.locator("body")
        label = self.page.get_by_text(name, exact=True)
        control = self.page.get_by_role(role)
        block = scope.locator("div").filter(has=label).filter(has=control).last
        return block.get_by_role(role)

    def open_deployment(self, flow: str, name: str) -> None:
        """From the deployments list, searched by name (it has pages), `flow/name`."""
        page = self.page
        page.goto(f"{self.ui_url}/deployments")
        page.get_by_role("searchbox", name="Search deployments").fill(name)
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=flow, exact=True))
        row.get_by_role("link", name=name, exact=True).click()
        expect(page.get_by_role("button", name="Run", exact=True)).to_be_visible()

    def start_custom_run(self, parameters: dict[str, str]) -> None:
        """Run > Custom run, and type each parameter into its field."""
        page = self.page
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_role("button", name="Custom run", exact=True).click()
        for name, value in parameters.items():
            self.field(name, "textbox").fill(value)

    def submit_run(self) -> str:
        """Submit the custom run form and open the run; return its id."""
        self.page.get_by_role("button", name="Submit", exact=True).click()
        return self.view_started_run()

    def open_quick_run(self) -> Locator:
        """Run > Quick run: the form of the deployment's own parameters."""
        self.page.get_by_role("button", name="Run", exact=True).click()
        self.page.get_by_role("button", name="Quick run", exact=True).click()
        dialog = self.page.get_by_role("dialog")
        expect(dialog.get_by_text("Run Deployment")).to_be_visible()
        return dialog

    def submit_quick_run(self, dialog: Locator) -> str:
        """Run the quick run form's parameters as they are; open the run, return its id."""
        dialog.get_by_role("button", name="Run", exact=True).click()
        return self.view_started_run()

    def view_started_run(self) -> str:
        # The toast saying the run is scheduled may show twice: the newest is on top.
        self.page.get_by_role("button", name="View run").last.click()
        self.page.wait_for_url(RUN_PATH)
        match = RUN_PATH.search(self.page.url)
        assert match, self.page.url
        return match.group(1)

    def expect_state(self, state: str, timeout_ms: float = RUN_TIMEOUT_MS) -> None:
        """The run page's header shows `state` (the page follows the run by itself)."""
        header = self.page.get_by_role("banner")
        expect(header.get_by_text(state, exact=True)).to_be_visible(timeout=timeout_ms)

    def artifacts_tab(self, key: str) -> Locator:
        """On the run page: the Artifacts tab, showing the artifact `key`."""
        page = self.page
        page.get_by_role("listitem").filter(has_text=re.compile(r"^Artifacts$")).click()
        card = page.get_by_role("tabpanel").get_by_role("link").filter(has_text=key)
        expect(card).to_be_visible()
        return card

    def open_artifact(self, card: Locator, key: str) -> None:
        """The artifact's own page, its content rendered."""
        card.click()
        expect(self.page.get_by_role("banner").get_by_role("link", name=key)).to_be_visible()

    def open_resume_form(self) -> Locator:
        """On a paused run's page: Resume, and the form it shows."""
        self.page.get_by_role("button", name="Resume", exact=True).click()
        dialog = self.page.get_by_role("dialog")
        expect(dialog.get_by_text("Resume Flow Run")).to_be_visible()
        return dialog
