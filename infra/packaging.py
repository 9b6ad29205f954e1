"""Lambda packaging without Docker.

Dependencies: ``pip install --platform manylinux2014_aarch64 --only-binary=:all:`` for CPython 3.13 into a
layer, cached in ``.build/`` by a hash of requirements.txt, and handed to CDK through local bundling (so
``cdk synth`` never needs Docker; the Docker image named below is never pulled).
The AWS SDK the runtime ships (botocore, pulled in by aws-xray-sdk, and what it alone needs) is taken back out
of the layer (``RUNTIME_PACKAGES``): a layer's copy would shadow the runtime's and run its boto3 on another botocore.
Code: the ``functions/`` package and the deployer's ``tools/`` copied as they are (no ``__pycache__``).
"""

from __future__ import annotations

import hashlib
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


def requirements_hash() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"{LAMBDA_PLATFORM}/{LAMBDA_PYTHON_VERSION}/{','.join(RUNTIME_PACKAGES)}".encode())
    return digest.hexdigest()[:16]


def build_layer(target: Path | None = None) -> Path:
    """Install requirements.txt for Lambda (ARM64, CPython 3.13) into ``.build/layer-<hash>/python``."""
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
            LAMBDA_PLATFORM,
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


def function_code() -> lambda_.Code:
    """The functions/ and tools/ packages, staged in a folder named by their content so concurrent synths never
    race."""
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
    return lambda_.Code.from_asset(str(stage))


_ELF_MACHINE_AARCH64 = 183


def _is_arm64_elf(path: Path) -> bool:
    header = path.read_bytes()[:20]
    return header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == _ELF_MACHINE_AARCH64


def verify_layer(assembly: Path) -> list[Path]:
    """Check every compiled extension in the synthesised layer loads on Lambda's CPython 3.13 on ARM64.

    Reads each ELF header's machine field (not just the file name). Returns the extensions checked;
    raises SystemExit naming any that would not load.
    """
    layers = [p for p in assembly.glob("asset.*/python") if p.is_dir()]
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


# what the functions import from the layer (boto3 comes with the runtime)
LAYER_PACKAGES = ("aws_lambda_powertools", "aws_xray_sdk", "wrapt", "anthropic", "pydantic", "mcp", "httpx2", "tzdata")
# The AWS SDK of the Lambda Python runtime and the dependencies only it brings (no other layer package needs them):
# import names, and their distributions' names as in ``<name>-<version>.dist-info``
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "urllib3", "dateutil", "six")
RUNTIME_DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "urllib3", "python_dateutil", "six")


if __name__ == "__main__":
    checked = verify_layer(Path(sys.argv[1] if len(sys.argv) > 1 else "cdk.out"))
    print(f"layer OK: {len(checked)} compiled extensions, all CPython {LAMBDA_PYTHON_VERSION} / {LAMBDA_PLATFORM}")
