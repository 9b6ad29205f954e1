"""The checks `make synth` runs: compiled extensions must load on CPython 3.13 / ARM64, and every module of the layer
and the code must ship the bytecode Lambda's CPython 3.13 reads without compiling it again."""

from __future__ import annotations

import _imp
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from infra import packaging
from infra.packaging import (
    LAYER_PACKAGES,
    PYC_MAGIC,
    PYTHON_ENV,
    _remove_runtime_packages,
    asset_dirs,
    code_packages,
    compile_bytecode,
    function_code,
    lambda_python,
    pyc_problem,
    verify_bytecode,
    verify_layer,
)

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


SOURCE = b"ANSWER = 42\n"
MAGIC_311 = (3495).to_bytes(2, "little") + b"\r\n"


def pyc(source: Path, *, magic: bytes = PYC_MAGIC, flags: int = 0b01, of: bytes | None = None) -> Path:
    """A .pyc header as CPython writes one: magic, flags, then the source's hash (or a date and size)."""
    key = int.from_bytes(magic, "little")
    cache = source.parent / "__pycache__"
    cache.mkdir(exist_ok=True)
    path = cache / f"{source.stem}.cpython-313.pyc"
    path.write_bytes(magic + flags.to_bytes(4, "little") + _imp.source_hash(key, of or source.read_bytes()) + b"code")
    return path


def module(root: Path, name: str = "mod.py") -> Path:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(SOURCE)
    return root / name


def test_a_module_with_its_unchecked_hash_pyc_is_loaded_as_it_is(tmp_path: Path) -> None:
    source = module(tmp_path)
    pyc(source)
    assert pyc_problem(source) is None


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda source: None, "no .pyc"),
        (lambda source: pyc(source, magic=MAGIC_311), "another Python"),
        (lambda source: pyc(source, flags=0), "timestamp-checked"),  # stale on Lambda: the zip dates it 1980
        (lambda source: pyc(source, flags=0b11), "source-checked"),  # hashes the source on every import
        (lambda source: pyc(source, of=b"ANSWER = 41\n"), "another version of the source"),
    ],
)
def test_a_module_lambda_would_compile_again_is_named(
    tmp_path: Path, make: Callable[[Path], object], problem: str
) -> None:
    source = module(tmp_path)
    make(source)
    assert problem in (pyc_problem(source) or "")


def assembly(tmp_path: Path, *, compiled: bool) -> Path:
    """A cloud assembly with a layer and a code asset (named in its manifest) and a former synth's asset."""
    for asset, name in (("asset.layer", "python/pkg/__init__.py"), ("asset.code", "functions/handlers/api.py")):
        source = module(tmp_path / asset, name)
        if compiled:
            pyc(source)
    module(tmp_path / "asset.stale", "functions/old.py")  # not in the manifest: not checked
    files = {h: {"source": {"path": f"asset.{h}", "packaging": "zip"}} for h in ("layer", "code")}
    (tmp_path / "Stepwise.assets.json").write_text(json.dumps({"files": files}))
    return tmp_path


def test_the_bytecode_check_passes_an_assembly_whose_modules_are_all_compiled(tmp_path: Path) -> None:
    cloud = assembly(tmp_path, compiled=True)
    assert [p.name for p in asset_dirs(cloud)] == ["asset.code", "asset.layer"]
    assert verify_bytecode(cloud) == 2


def test_the_bytecode_check_names_the_modules_shipped_without_bytecode(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"2 of 2 modules would be compiled on every cold start(.|\n)*api.py: no .pyc"):
        verify_bytecode(assembly(tmp_path, compiled=False))


def test_the_bytecode_check_fails_an_assembly_without_the_code(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no functions' code asset"):
        verify_bytecode(tmp_path)


def test_an_interpreter_that_is_not_313_is_refused_saying_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PYTHON_ENV, sys.executable)  # the 3.11 of the tests
    with pytest.raises(SystemExit, match=f"uv python install 3.13(.|\n)*{PYTHON_ENV}=/path/to/python3.13"):
        lambda_python()


def test_compiled_modules_pass_the_check(tmp_path: Path) -> None:
    try:
        lambda_python()
    except SystemExit:
        pytest.skip("no CPython 3.13 on this machine")
    sources = [module(tmp_path, "functions/a.py"), module(tmp_path, "functions/b/c.py")]
    compile_bytecode(tmp_path, packaging.CODE_ROOT)
    assert [pyc_problem(source) for source in sources] == [None, None]
