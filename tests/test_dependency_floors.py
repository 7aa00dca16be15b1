"""pyproject.toml's lower bounds keep out releases with known vulnerabilities that touch what trainyard does:
loading checkpoints with `torch.load(weights_only=True)`, reading Parquet/IPC with pyarrow, decoding images with
pillow. No Ray, under a second."""
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

# (distribution, the last vulnerable release, the first fixed one, the advisory)
FLOORS = [
    ("torch", "2.5.1", "2.6.0", "CVE-2025-32434: torch.load(weights_only=True) runs code from a crafted file"),
    ("pyarrow", "14.0.0", "14.0.1", "CVE-2023-47248: crafted IPC/Parquet files deserialise Python objects"),
    ("pillow", "10.2.0", "10.3.0", "CVE-2024-28219: buffer overflow in ImageCms"),
]


def _dependencies() -> dict[str, Requirement]:
    tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {r.name.lower(): r for r in map(Requirement, project["dependencies"])}


@pytest.mark.parametrize("name, vulnerable, fixed, advisory", FLOORS, ids=[f[0] for f in FLOORS])
def test_the_lower_bound_excludes_the_vulnerable_release(name, vulnerable, fixed, advisory):
    requirement = _dependencies()[name]
    assert not requirement.specifier.contains(vulnerable, prereleases=True), (
        f"pyproject.toml allows {name} {vulnerable} ({advisory}): raise the bound to >={fixed}")
    assert requirement.specifier.contains(fixed), f"{requirement} excludes the fixed release {name} {fixed}"
