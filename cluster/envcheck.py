"""Does this interpreter have what trainyard needs? Run on the cluster before a submitted job's real command.

A Ray job's entrypoint runs with the cluster's `python`, not the submitter's. trainyard ships its code as the
job's working_dir but not its dependencies (torch alone is GBs): the cluster's image must have them
(`pip install .` in the image, or the same venv as on a local `trainyard cluster up`). When it does not, this
says so in the job's log, naming the interpreter and every missing package, instead of a traceback from
deep inside the pipeline.

    python -m cluster.envcheck [PYPROJECT]      exit 0 when all is there, 3 otherwise
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from cluster.errors import EXIT_OK

# Not one of cluster.errors' codes on purpose: this runs first in a submitted job's entrypoint, and a code
# no trainyard command returns tells "the cluster's python lacks our dependencies" apart from a failed
# (1) or refused (2) run in the job's status. Documented above and in `trainyard submit`.
EXIT_MISSING = 3
# Distribution name -> import name, where they differ.
_IMPORT_NAMES = {"pyyaml": "yaml", "scikit-learn": "sklearn", "pillow": "PIL", "moto": "moto"}


def dependency_specs(pyproject: Path) -> list[str]:
    """[project].dependencies as written: read with tomllib (Python 3.11+), else with a small parser of the plain
    dependency list that drops comments first (an apostrophe in a comment once read as a quote)."""
    text = pyproject.read_text()
    try:
        import tomllib
        return list(tomllib.loads(text).get("project", {}).get("dependencies", []))
    except ModuleNotFoundError:  # Python 3.10 on the cluster
        block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M)
        body = re.sub(r"#[^\n]*", "", block.group(1)) if block else ""
        return re.findall(r"""["']([^"']+)["']""", body)


def required_modules(pyproject: Path) -> list[str]:
    """Import names of [project].dependencies (`dependency_specs`)."""
    names = []
    for spec in dependency_specs(pyproject):
        dist = re.split(r"[\s\[<>=!~;]", spec.strip(), maxsplit=1)[0].lower()
        if dist:
            names.append(_IMPORT_NAMES.get(dist, dist.replace("-", "_")))
    return names


def missing_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def wrong_versions(specs: list[str]) -> list[str]:
    """The installed distributions outside the versions the specs ask ("ray 2.59.0 (trainyard needs
    <2.61,>=2.60)"): a cluster's Ray of another minor version passed, and failed deep inside Ray Train. Missing
    ones are `missing_modules`'; without `packaging` (Ray's own dependency) nothing is checked."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        return []
    found = []
    for spec in specs:
        try:
            req = Requirement(spec)
        except InvalidRequirement:
            continue
        if not req.specifier or (req.marker is not None and not req.marker.evaluate()):
            continue
        try:
            have = version(req.name)
        except PackageNotFoundError:
            continue
        if not req.specifier.contains(have, prereleases=True):
            found.append(f"{req.name} {have} (trainyard needs {req.specifier})")
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pyproject = Path(argv[0]) if argv else Path("pyproject.toml")
    if not pyproject.is_file():
        print(f"trainyard envcheck: {pyproject} not found in {Path.cwd()}: was the job submitted with the "
              "repository as its working_dir?", file=sys.stderr)
        return EXIT_MISSING
    missing = missing_modules(required_modules(pyproject))
    if missing:
        print(f"trainyard envcheck: the cluster's python ({sys.executable}, Python "
              f"{sys.version.split()[0]}) lacks {', '.join(missing)}. trainyard ships its code with the job "
              "but not its dependencies: run the cluster from an image or environment where "
              "`pip install .` (trainyard's pyproject.toml) was done — for KubeRay, the image in "
              "cluster/kuberay/*.yaml; for the cluster launcher, setup_commands in cluster/launcher/aws.yaml.",
              file=sys.stderr)
        return EXIT_MISSING
    wrong = wrong_versions(dependency_specs(pyproject))
    if wrong:
        print(f"trainyard envcheck: the cluster's python ({sys.executable}) has {'; '.join(wrong)}: install the "
              "versions trainyard's pyproject.toml asks (`pip install .` in the cluster's image or environment)",
              file=sys.stderr)
        return EXIT_MISSING
    import ray
    print(f"trainyard envcheck: {sys.executable} (Ray {ray.__version__}) has all of trainyard's dependencies",
          flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
