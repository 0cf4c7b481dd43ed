"""The wheel ships the licence and the citation file beside the package."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_the_licence_and_the_citation(tmp_path):
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    done = subprocess.run([*build, str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("resnets-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("LICENSE", "CITATION.cff"):
        (member,) = [n for n in names if n.endswith(f".dist-info/licenses/{name}")]
        assert zipfile.ZipFile(wheel).read(member) == (ROOT / name).read_bytes()
    assert "resnets/cli.py" in names and "resnets/report/templates/report.html.j2" in names


def test_the_citation_file_cites_the_paper():
    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    paper = cff["preferred-citation"]
    assert paper["title"] == "Deep Residual Learning for Image Recognition" and paper["year"] == 2016
    assert [a["family-names"] for a in paper["authors"]] == ["He", "Zhang", "Ren", "Sun"]
    assert cff["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
