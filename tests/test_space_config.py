"""The README's Space front matter agrees with what the project pins and ships."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def pinned(package: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if name.split("[")[0] == package:
            return version
    raise AssertionError(f"{package} is not pinned")


def test_space_front_matter_matches_the_project():
    meta = front_matter()
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == pinned("gradio")
    assert (ROOT / meta["app_file"]).is_file()
    assert meta["python_version"] == "3.11"
    assert meta["suggested_hardware"] == "cpu-basic"
    assert meta["startup_duration_timeout"].endswith(("m", "h"))
    # the model the app falls back to where the embedded package is not installed
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in meta["preload_from_hub"]
