"""The Prefect UI in a real browser (Debian's Chromium through Playwright), as an operator
uses it: a release started from the `release/<env>` deployment's page with a typed version
runs on the worker to a real compose app and shows its report; a rollback that waits for
approval shows its form, and approving it in the page lets it finish.

The environment's deployments come from prefect.yaml, copied for one new environment as its
header says, on the harness's work pool. Screenshots of every step: see tests/browser.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.browser import (
    CHROMIUM,
    PrefectUI,
    launch_chromium,
    off_browser_loop,
    screenshot_dir,
)
from tests.compose_app import ComposeApp, build_images
from tests.harness.docker_engine import DockerInfo
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.release_env import save_release_environment

pytestmark = [
    pytest.mark.docker,
    pytest.mark.postgres,
    pytest.mark.s3,
    pytest.mark.prefect,
    pytest.mark.browser,
]

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@dataclass
class Stage:
    name: str
    app: ComposeApp
    docker: DockerInfo

    def versions(self) -> dict[str, str]:
        return self.app.running_versions(self.docker.client())


def everywhere(version: str) -> dict[str, str]:
    return {"api": version, "worker": version, "web": version}


def prefect_file(name: str, work_pool: str, path: Path) -> Path:
    """prefect.yaml's definitions with the release and rollback deployments of `name`."""
    text = (REPO / "prefect.yaml").read_text()
    definitions, marker, _ = text.partition("\ndeployments:\n")
    assert marker
    assert "  work_pool: &pool\n    name: slipway\n" in definitions
    definitions = definitions.replace("    name: slipway\n", f"    name: {work_pool}\n", 1)
    deployments = "".join(
        f"  - <<: *{kind}\n    name: {name}\n    parameters: {{env: {name}}}\n"
        for kind in ("release", "rollback")
    )
    path.write_text(definitions + marker + deployments)
    return path


def deploy(path: Path, prefect_server: PrefectInfo) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "AWS_", "PG"))}
    env["PREFECT_API_URL"] = prefect_server.api_url
    command = ["prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(path)]
    done = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest) -> Iterator[Path]:
    path = screenshot_dir()
    yield path
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nPrefect UI screenshots: {path}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"no {CHROMIUM}: apt-get install chromium"
        if IN_CI:
            pytest.fail(f"browser unavailable under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright, tmp_path_factory.mktemp("chromium-home"))
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def stage(
    browser: Browser,
    docker_engine: DockerInfo,
    postgres: PostgresInfo,
    s3: S3Info,
    prefect_server: PrefectInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stage]:
    """A demo app environment whose manual rollbacks wait for approval, and its deployments."""
    from prefect.settings import PREFECT_API_URL

    del browser  # no environment to build when there is no browser
    # Not a temporary server of this process, on the harness server's own SQLite file.
    assert off_browser_loop(PREFECT_API_URL.value) == prefect_server.api_url
    client = docker_engine.client()
    build_images(client)
    root = tmp_path_factory.mktemp("ui")
    name, app = off_browser_loop(lambda: approving_environment(root, postgres, s3, docker_engine))
    deploy(prefect_file(name, prefect_server.work_pool, root / "prefect.yaml"), prefect_server)
    try:
        yield Stage(name, app, docker_engine)
    finally:
        app.remove(client)


def approving_environment(
    root: Path, postgres: PostgresInfo, s3: S3Info, docker: DockerInfo
) -> tuple[str, ComposeApp]:
    from blocks.environment import Environment

    name, app, _, _ = save_release_environment(root, postgres, s3, docker_host=docker.host)
    environment = Environment.resolve(name)
    environment.policy = environment.policy.model_copy(update={"approve_rollback": True})
    environment.save(name, overwrite=True)
    return name, app


@pytest.fixture
def ui(
    browser: Browser,
    prefect_server: PrefectInfo,
    shots: Path,
    session_dir: Path,
    request: pytest.FixtureRequest,
) -> Iterator[PrefectUI]:
    prefix = request.node.originalname.removeprefix("test_").split("_")[0]
    ui_url = prefect_server.api_url.removesuffix("/api")
    page = PrefectUI(browser, ui_url, shots, prefix, logs=session_dir / "logs")
    try:
        yield page
    finally:
        page.close()


def read_run(run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    def read() -> Any:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(UUID(run_id))

    return off_browser_loop(read)


def latest_release(stage: Stage) -> Any:
    from blocks.object_storage import ObjectStorage
    from tasks.release.journal import list_releases

    def read() -> Any:
        store = ObjectStorage.resolve(f"{stage.name}-store")
        return list_releases(store.client(), store, stage.name)[0].record

    return off_browser_loop(read)


def release_by_api(stage: Stage, version: str) -> None:
    from prefect.deployments import run_deployment

    flow_run: Any = off_browser_loop(
        lambda: run_deployment(
            f"release/{stage.name}", parameters={"version": version}, timeout=420, poll_interval=1
        )
    )
    assert flow_run.state.is_completed(), flow_run.state


def test_release_typed_in_the_ui_completes_and_shows_its_report(
    stage: Stage, ui: PrefectUI
) -> None:
    with ui.step("deployment-page"):
        ui.open_deployment("release", stage.name)
    with ui.step("custom-run-form"):
        ui.start_custom_run({"version": "v1"})
        expect(ui.field("env", "textbox")).to_have_value(stage.name)
    with ui.step("run-page"):
        run_id = ui.submit_run()
    with ui.step("completed"):
        ui.expect_state("Completed")
    flow_run = read_run(run_id)
    assert flow_run.state.is_completed(), flow_run.state
    assert (flow_run.parameters["version"], flow_run.parameters["env"]) == ("v1", stage.name)
    assert not flow_run.parameters.get("dry_run")
    assert stage.versions() == everywhere("v1")
    record = latest_release(stage)
    assert (record.version, record.status) == ("v1", "succeeded")

    with ui.step("artifacts-tab"):
        card = ui.artifacts_tab("release-report")
    with ui.step("release-report"):
        ui.open_artifact(card, "release-report")
        title = f"Release v1 to {stage.name}: succeeded"
        expect(ui.page.get_by_role("heading", name=title)).to_be_visible()
        expect(ui.page.get_by_text(record.id, exact=True)).to_be_visible()
        expect(ui.page.get_by_role("heading", name="Steps")).to_be_visible()
        expect(ui.page.get_by_role("link", name=flow_run.name)).to_be_visible()


def test_rollback_waits_for_the_approval_given_in_the_page(stage: Stage, ui: PrefectUI) -> None:
    if stage.versions() != everywhere("v1"):  # the first test did not leave v1 live
        release_by_api(stage, "v1")
    release_by_api(stage, "v2")
    assert stage.versions() == everywhere("v2")

    with ui.step("deployment-page"):
        ui.open_deployment("rollback", stage.name)
    with ui.step("quick-run-form"):
        form = ui.open_quick_run()
        expect(ui.field("env", "textbox", within=form)).to_have_value(stage.name)
    with ui.step("paused"):
        run_id = ui.submit_quick_run(form)
        ui.expect_state("Paused")
    assert stage.versions() == everywhere("v2")  # nothing happens before the approval
    with ui.step("approval-form"):
        form = ui.open_resume_form()
        expect(form.get_by_text(f"roll back {stage.name}")).to_be_visible()
        approve = ui.field("Approve (Optional)", "switch", within=form)
        expect(approve).not_to_be_checked()
        approve.click()
        expect(approve).to_be_checked()
        ui.field("Reason (Optional)", "textbox", within=form).fill("checked in the browser")
    with ui.step("resumed"):
        form.get_by_role("button", name="Submit", exact=True).click()
        expect(form).to_be_hidden()
        ui.expect_state("Completed")
        approved = f"approved: roll back {stage.name} (checked in the browser)"
        expect(ui.page.get_by_text(approved)).to_be_visible()
    assert read_run(run_id).state.is_completed()
    assert stage.versions() == everywhere("v1")
