"""Lambda packaging without Docker.

Dependencies: ``pip install --platform manylinux2014_aarch64 --only-binary=:all:`` for CPython 3.13 into a
layer, cached in ``.build/`` by a hash of requirements.txt, and handed to CDK through local bundling (so
``cdk synth`` never needs Docker; the Docker image named below is never pulled).
The AWS SDK the runtime ships (botocore, pulled in by aws-xray-sdk, and what it alone needs) is taken back out
of the layer (``RUNTIME_PACKAGES``): a layer's copy would shadow the runtime's and run its boto3 on another botocore.
Code: the ``functions/`` package and the deployer's ``tools/`` copied as they are (no ``__pycache__``).

Both ship bytecode for CPython 3.13 (``compile_bytecode``), compiled by a 3.13 interpreter of the build machine
(``lambda_python``): ``/opt`` and ``/var/task`` are read-only on Lambda, so a module without its ``.pyc`` is compiled
again on every cold start. The ``.pyc`` are hash-based and unchecked: CDK's asset zip dates every file 1980-01-01,
which makes timestamp-checked ``.pyc`` stale on Lambda, and an unchecked one is never compared with its source (each
is compiled from exactly the file beside it, in the same build). ``verify_bytecode`` (``make synth``) checks that.
"""

from __future__ import annotations

import _imp
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from infra.constants import (
    BUILD_DIR,
    DEPLOYER_TOOLS_DIR,
    FUNCTIONS_DIR,
    LAMBDA_PLATFORM,
    LAMBDA_PYTHON_VERSION,
    REQUIREMENTS,
)

# The interpreter that compiles the bytecode: this variable, else python3.13 on PATH, else a pyenv or uv install
PYTHON_ENV = "STEPWISE_PYTHON313"
# CPython 3.13's bytecode: every 3.13.x reads the same (its magic number is fixed from the first release candidate)
PYC_MAGIC = (3571).to_bytes(2, "little") + b"\r\n"
PYC_TAG = "cpython-" + LAMBDA_PYTHON_VERSION.replace(".", "")
_PYC_UNCHECKED_HASH = 0b01  # the .pyc's flags: hash-based (bit 0), not checked against the source (bit 1 clear)
BYTECODE = f"{PYC_TAG}-unchecked-hash"  # part of the assets' hashes: an asset built without it is built again
LAYER_ROOT = "/opt/python"  # where Lambda puts a layer's python/ folder
CODE_ROOT = "/var/task"  # and the function's code


def requirements_hash() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"{LAMBDA_PLATFORM}/{LAMBDA_PYTHON_VERSION}/{','.join(RUNTIME_PACKAGES)}/{BYTECODE}".encode())
    return digest.hexdigest()[:16]


def _python_candidates() -> list[str]:
    named = os.environ.get(PYTHON_ENV, "").strip()
    if named:
        return [named]  # what the deployer named, and nothing else
    on_path = [found for name in (f"python{LAMBDA_PYTHON_VERSION}",) if (found := shutil.which(name))]
    installs = [
        f"~/.pyenv/versions/{LAMBDA_PYTHON_VERSION}*/bin/python{LAMBDA_PYTHON_VERSION}",
        f"~/.local/share/uv/python/cpython-{LAMBDA_PYTHON_VERSION}*/bin/python{LAMBDA_PYTHON_VERSION}",
    ]
    return on_path + sorted((p for pattern in installs for p in glob.glob(os.path.expanduser(pattern))), reverse=True)


def lambda_python() -> str:
    """A CPython 3.13 of this machine, to compile the bytecode Lambda's python3.13 runtime reads.

    Raises SystemExit saying how to get one when there is none (a pyenv shim that does not run counts as none)."""
    for candidate in _python_candidates():
        try:
            found = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        except OSError:
            continue
        if found.returncode == 0 and found.stdout.strip() == LAMBDA_PYTHON_VERSION:
            return candidate
    version = LAMBDA_PYTHON_VERSION
    raise SystemExit(
        f"Lambda runs CPython {version}, and its bytecode is compiled by a CPython {version} of this machine: none "
        f"found ({PYTHON_ENV}, python{version} on PATH, pyenv, uv). Install one (`uv python install {version}`, "
        f"`pyenv install {version}`, your package manager's python{version}, or python.org) and put it on PATH or "
        f"name it: {PYTHON_ENV}=/path/to/python{version} make synth"
    )


def compile_bytecode(root: Path, deployed_at: str) -> None:
    """Compile every module under ``root`` for CPython 3.13 (hash-based, unchecked ``.pyc``), recording each source
    under ``deployed_at`` (where Lambda puts ``root``), so tracebacks name the deployed files.

    Raises SystemExit naming what did not compile."""
    root = root.resolve()
    command = [lambda_python(), "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
               "-s", str(root), "-p", deployed_at, str(root)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"compiling {root} for CPython {LAMBDA_PYTHON_VERSION} failed:\n{done.stdout}{done.stderr}")


def build_layer(target: Path | None = None, *, platform: str = LAMBDA_PLATFORM) -> Path:
    """Install requirements.txt for Lambda (ARM64, CPython 3.13) into ``.build/layer-<hash>/python``, compiled.

    ``platform``: another platform's wheels (bench/cold_start.py lays the layer out for this machine)."""
    layer = target or BUILD_DIR / f"layer-{requirements_hash()}"
    if (layer / ".complete").exists():
        return layer
    staging = layer.with_name(layer.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--requirement",
            str(REQUIREMENTS),
            "--target",
            str(staging / "python"),
            "--platform",
            platform,
            "--implementation",
            "cp",
            "--python-version",
            LAMBDA_PYTHON_VERSION,
            "--only-binary=:all:",
            "--no-compile",
        ],
        check=True,
    )
    _remove_runtime_packages(staging / "python")
    compile_bytecode(staging / "python", LAYER_ROOT)
    (staging / ".complete").write_text(requirements_hash())
    shutil.rmtree(layer, ignore_errors=True)
    staging.rename(layer)
    return layer


def _runtime_packages_in(site: Path) -> list[Path]:
    """The runtime's packages (package directories, modules, .dist-info) in a layer's ``python`` directory."""
    modules = [site / name for name in RUNTIME_PACKAGES] + [site / f"{name}.py" for name in RUNTIME_PACKAGES]
    metadata = [info for name in RUNTIME_DISTRIBUTIONS for info in sorted(site.glob(f"{name}-*.dist-info"))]
    return [path for path in modules if path.exists()] + metadata


def _remove_runtime_packages(site: Path) -> None:
    for path in _runtime_packages_in(site):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@jsii.implements(ILocalBundling)
class _LayerBundling:
    def try_bundle(self, output_dir: str, options: Any) -> bool:  # jsii passes the BundlingOptions positionally
        built = build_layer()
        shutil.copytree(built / "python", Path(output_dir) / "python", dirs_exist_ok=True)
        return True


def dependencies_layer_code() -> lambda_.Code:
    return lambda_.Code.from_asset(
        str(REQUIREMENTS.parent),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=requirements_hash(),
        bundling=BundlingOptions(
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.13"),  # never pulled: local wins
            local=_LayerBundling(),  # type: ignore[arg-type]  # jsii's call shape differs from the stub
        ),
    )


def code_packages() -> list[Path]:
    """What the functions' code asset holds: the ``functions/`` package and, if present, the deployer's ``tools/``."""
    return [path for path in (FUNCTIONS_DIR, DEPLOYER_TOOLS_DIR) if path.is_dir()]


@jsii.implements(ILocalBundling)
class _CodeBundling:
    def __init__(self, staged: Path) -> None:
        self.staged = staged

    def try_bundle(self, output_dir: str, options: Any) -> bool:
        shutil.copytree(self.staged, output_dir, dirs_exist_ok=True)
        compile_bytecode(Path(output_dir), CODE_ROOT)
        return True


def function_code() -> lambda_.Code:
    """The functions/ and tools/ packages, staged in a folder named by their content so concurrent synths never
    race, and bundled with their bytecode (a bundling a test or the local stack skips: it then uses the sources).

    The asset's hash is the sources' (and the bytecode's kind), so a synth that compiles them again publishes no new
    function version."""
    digest = hashlib.sha256()
    for package in code_packages():
        sources = sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in sources:
            digest.update(str(path.relative_to(package.parent)).encode() + b"\0" + path.read_bytes())
    stage = BUILD_DIR / f"code-{digest.hexdigest()[:16]}"
    if not stage.exists():
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="code-", dir=BUILD_DIR))
        for package in code_packages():
            shutil.copytree(package, staging / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        try:
            staging.rename(stage)
        except OSError:  # another synth staged the same content first
            shutil.rmtree(staging, ignore_errors=True)
    return lambda_.Code.from_asset(
        str(stage),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=f"{digest.hexdigest()[:32]}-{BYTECODE}",
        bundling=BundlingOptions(
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.13"),  # never pulled: local wins
            local=_CodeBundling(stage),  # type: ignore[arg-type]  # jsii's call shape differs from the stub
        ),
    )


_ELF_MACHINE_AARCH64 = 183


def _is_arm64_elf(path: Path) -> bool:
    header = path.read_bytes()[:20]
    return header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == _ELF_MACHINE_AARCH64


def verify_layer(assembly: Path) -> list[Path]:
    """Check every compiled extension in the synthesised layer loads on Lambda's CPython 3.13 on ARM64.

    Reads each ELF header's machine field (not just the file name). Returns the extensions checked;
    raises SystemExit naming any that would not load.
    """
    layers = [asset / "python" for asset in asset_dirs(assembly) if (asset / "python").is_dir()]
    if not layers:
        raise SystemExit(f"no dependency layer in {assembly}: was bundling skipped?")
    extensions = [so for layer in layers for so in layer.rglob("*.so")]
    abi = "cpython-" + LAMBDA_PYTHON_VERSION.replace(".", "")
    wrong = [so for so in extensions if not _is_arm64_elf(so) or ("cpython-" in so.name and abi not in so.name)]
    if wrong:
        raise SystemExit("extensions that will not load on the Lambda runtime:\n" + "\n".join(map(str, wrong)))
    shipped = [path.name for layer in layers for path in _runtime_packages_in(layer)]
    if shipped:
        raise SystemExit(f"the dependency layer ships {', '.join(shipped)}, which the Lambda runtime provides")
    missing = [name for name in LAYER_PACKAGES if not any((layer / name).is_dir() for layer in layers)]
    if missing:
        raise SystemExit(f"the dependency layer lacks {', '.join(missing)}: is it in requirements.txt?")
    return extensions


def asset_dirs(assembly: Path) -> list[Path]:
    """The folders of the zip assets the cloud assembly's stacks use (its ``*.assets.json``), not those a former
    synth left there; without a manifest, every ``asset.*`` folder."""
    manifests = sorted(assembly.glob("*.assets.json"))
    if not manifests:
        return sorted(p for p in assembly.glob("asset.*") if p.is_dir())
    named = {
        entry["source"]["path"]
        for manifest in manifests
        for entry in json.loads(manifest.read_text()).get("files", {}).values()
        if entry.get("source", {}).get("packaging") == "zip"
    }
    return sorted(assembly / name for name in named if (assembly / name).is_dir())


def pyc_problem(source: Path) -> str | None:
    """Why Lambda's CPython 3.13 would compile ``source`` again on every cold start, or None: its ``.pyc`` is
    missing, is for another Python, is checked against a source dated 1980 by the asset zip, or is not of this
    source."""
    pyc = source.parent / "__pycache__" / f"{source.stem}.{PYC_TAG}.pyc"
    if not pyc.is_file():
        return "no .pyc"
    header = pyc.read_bytes()[:16]
    if header[:4] != PYC_MAGIC:
        return f"a .pyc for another Python (magic {header[:4].hex()})"
    if int.from_bytes(header[4:8], "little") != _PYC_UNCHECKED_HASH:
        return "a timestamp-checked or source-checked .pyc (not --invalidation-mode unchecked-hash)"
    if header[8:16] != _imp.source_hash(int.from_bytes(PYC_MAGIC, "little"), source.read_bytes()):
        return "a .pyc of another version of the source"
    return None


def verify_bytecode(assembly: Path) -> int:
    """Check every module of the layer and of the functions' code ships its CPython 3.13 bytecode, hash-based and
    unchecked (``pyc_problem``). Returns the number of modules checked; raises SystemExit naming those that fail."""
    roots = [asset / "python" if (asset / "python").is_dir() else asset for asset in asset_dirs(assembly)]
    code = [root for root in roots if (root / "functions").is_dir()]
    if not code:
        raise SystemExit(f"no functions' code asset in {assembly}: was bundling skipped?")
    sources = [source for root in roots for source in root.rglob("*.py")]
    problems = [f"{source}: {problem}" for source in sources if (problem := pyc_problem(source))]
    if problems:
        raise SystemExit(
            f"{len(problems)} of {len(sources)} modules would be compiled on every cold start on Lambda:\n"
            + "\n".join(problems[:20])
            + ("\n..." if len(problems) > 20 else "")
        )
    return len(sources)


# what the functions import from the layer (boto3 comes with the runtime)
LAYER_PACKAGES = ("aws_lambda_powertools", "aws_xray_sdk", "wrapt", "anthropic", "pydantic", "mcp", "httpx2", "tzdata")
# The AWS SDK of the Lambda Python runtime and the dependencies only it brings (no other layer package needs them):
# import names, and their distributions' names as in ``<name>-<version>.dist-info``
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "urllib3", "dateutil", "six")
RUNTIME_DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "urllib3", "python_dateutil", "six")


if __name__ == "__main__":
    cloud_assembly = Path(sys.argv[1] if len(sys.argv) > 1 else "cdk.out")
    checked = verify_layer(cloud_assembly)
    print(f"layer OK: {len(checked)} compiled extensions, all CPython {LAMBDA_PYTHON_VERSION} / {LAMBDA_PLATFORM}")
    modules = verify_bytecode(cloud_assembly)
    print(f"bytecode OK: {modules} modules of the layer and the code, each with its {PYC_TAG} .pyc (unchecked-hash)")
