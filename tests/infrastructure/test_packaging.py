"""The layer check that `make synth` runs: compiled extensions must load on CPython 3.13 / ARM64."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.packaging import LAYER_PACKAGES, _remove_runtime_packages, code_packages, function_code, verify_layer

ELF_AARCH64 = b"\x7fELF" + bytes(14) + (183).to_bytes(2, "little")
ELF_X86_64 = b"\x7fELF" + bytes(14) + (62).to_bytes(2, "little")


def layer(tmp_path: Path, files: dict[str, bytes], packages: tuple[str, ...] = LAYER_PACKAGES) -> Path:
    root = tmp_path / "asset.abc" / "python"
    for package in packages:  # what the functions import from the layer
        (root / package).mkdir(parents=True, exist_ok=True)
    for name, header in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(header + bytes(64))
    return tmp_path


def test_arm64_cpython_313_extensions_pass(tmp_path: Path) -> None:
    assembly = layer(
        tmp_path, {"pkg/_core.cpython-313-aarch64-linux-gnu.so": ELF_AARCH64, "rust/_x.abi3.so": ELF_AARCH64}
    )
    assert len(verify_layer(assembly)) == 2


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("pkg/_core.cpython-313-x86_64-linux-gnu.so", ELF_X86_64),  # the build machine's wheel
        ("rust/_x.abi3.so", ELF_X86_64),  # a name that says nothing about the platform
        ("pkg/_core.cpython-311-aarch64-linux-gnu.so", ELF_AARCH64),  # the wrong interpreter
    ],
)
def test_an_extension_that_would_not_load_fails_the_check(tmp_path: Path, name: str, header: bytes) -> None:
    with pytest.raises(SystemExit, match="will not load"):
        verify_layer(layer(tmp_path, {name: header}))


def test_a_missing_layer_fails_the_check(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no dependency layer"):
        verify_layer(tmp_path)


def test_a_layer_without_a_package_the_functions_import_fails_the_check(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="the dependency layer lacks mcp"):
        verify_layer(layer(tmp_path, {}, packages=tuple(p for p in LAYER_PACKAGES if p != "mcp")))


def test_a_layer_shipping_the_runtimes_aws_sdk_fails_the_check(tmp_path: Path) -> None:
    # aws-xray-sdk depends on botocore: a copy in the layer would shadow the one the runtime's boto3 is built for
    with pytest.raises(SystemExit, match="ships botocore, which the Lambda runtime provides"):
        verify_layer(layer(tmp_path, {"botocore/__init__.py": b""}))


def test_the_build_takes_the_runtimes_aws_sdk_and_its_own_dependencies_out_of_the_layer(tmp_path: Path) -> None:
    site = layer(tmp_path, {}) / "asset.abc" / "python"
    for name in ("botocore/__init__.py", "dateutil/tz.py", "urllib3/__init__.py", "six.py",
                 "python_dateutil-2.9.0.post0.dist-info/METADATA", "botocore-1.44.18.dist-info/METADATA",
                 "aws_xray_sdk/__init__.py", "jmespath/__init__.py", "sixty/__init__.py"):  # fmt: skip
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text("")
    _remove_runtime_packages(site)
    assert sorted(path.name for path in site.iterdir()) == sorted([*LAYER_PACKAGES, "jmespath", "sixty"])
    assert len(verify_layer(tmp_path)) == 0


def test_the_code_asset_holds_the_functions_and_the_deployers_tools() -> None:
    assert [package.name for package in code_packages()] == ["functions", "tools"]
    staged = Path(function_code().path)  # type: ignore[attr-defined]  # an AssetCode
    assert (staged / "tools" / "http_fetch.py").is_file() and (staged / "functions" / "handlers" / "tool.py").is_file()
    assert not list(staged.rglob("__pycache__"))
