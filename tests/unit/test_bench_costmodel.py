"""The cost model of bench/orchestration.py: the AWS price file parses, known counts price to figures worked out by
hand, and every price the bench uses is read from the file (none hard-coded)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from bench import costmodel
from bench.costmodel import AwsPrices, Counts, LambdaUse, load_prices, stepwise_bill
from bench.meter import item_size, read_units, value_size, write_units

ROOT = Path(__file__).resolve().parents[2]
BENCH_SOURCES = [ROOT / "bench" / "costmodel.py", ROOT / "bench" / "orchestration.py"]


@pytest.fixture(scope="module")
def prices() -> AwsPrices:
    return load_prices()


def test_the_price_file_names_a_source_and_a_date_for_every_price(prices: AwsPrices) -> None:
    raw = json.loads(costmodel.PRICES_FILE.read_text())
    assert raw["version"] and prices.currency == "USD" and prices.region == "us-east-1"
    assert set(prices.prices) == set(raw["prices"])
    for name, price in prices.prices.items():
        assert price.source.strip() and price.as_of, name
    # the list prices the issue names
    assert prices.usd("stepfunctions_standard_transition") == 0.025 / 1000
    assert prices.usd("lambda_arm_gb_second") == 0.0000133334
    assert prices.usd("lambda_durable_operation") == 8 / 1_000_000
    assert prices.usd("agentcore_runtime_vcpu_hour") == 0.0895


def test_an_unknown_price_is_an_error_naming_the_file(prices: AwsPrices) -> None:
    with pytest.raises(KeyError, match=r"no price 'lambda_x86_gb_second' in aws_prices.json"):
        prices.usd("lambda_x86_gb_second")


def test_known_counts_price_to_the_figure_worked_out_by_hand(prices: AwsPrices) -> None:
    # 4 transitions, 2 invocations of 1,024 MB billed 2,500 ms in all, 22 WRU, 7 RRU, 3 SQS requests, 1 API request
    counts = Counts(transitions=4, lambdas=(LambdaUse(1024, 2, 2500),), rru=7, wru=22, sqs_requests=3, api_requests=1)
    bill = stepwise_bill(prices, counts)
    by_hand = {
        "Step Functions transitions": 4 * 0.000025,  # 0.0001
        "Lambda": 2 * 0.0000002 + 1.0 * 2.5 * 0.0000133334,  # 0.0000337335
        "DynamoDB": 22 * 0.000000625 + 7 * 0.000000125,  # 0.000014625
        "SQS": 3 * 0.0000004,
        "HTTP API": 1 * 0.000001,
    }
    assert bill.items == pytest.approx(by_hand, rel=1e-12)
    assert bill.total == pytest.approx(0.0001505585, rel=1e-12)


def test_the_naive_loop_is_one_request_and_its_wait_and_cannot_outlast_fifteen_minutes(prices: AwsPrices) -> None:
    # 5 steps at 20 s, 1,024 MB: 100 GB-s and one request
    assert costmodel.naive_loop_usd(prices, 1024, 5, 20) == pytest.approx(100 * 0.0000133334 + 0.0000002, rel=1e-12)
    assert costmodel.naive_loop_usd(prices, 1024, 45, 20) is not None  # 900 s: just fits
    assert costmodel.naive_loop_usd(prices, 1024, 100, 20) is None  # 2,000 s: over Lambda's 15 minutes


def test_durable_functions_bill_an_operation_per_model_and_tool_call_plus_compute(prices: AwsPrices) -> None:
    # 5 model calls, 4 tool calls, 20 s each + 0.1 s compute, 1,024 MB: 100.5 GB-s, 1 request, 5 + 4 + 1 operations
    usd = costmodel.durable_usd(prices, 1024, 5, 4, 20, 0.1)
    assert usd == pytest.approx(100.5 * 0.0000133334 + 0.0000002 + 10 * 0.000008, rel=1e-12)
    # 100 steps of 20 s: 2,000 s is three invocations of at most 15 minutes
    long = costmodel.durable_usd(prices, 1024, 100, 99, 20, 0.0)
    assert long == pytest.approx(2000 * 0.0000133334 + 3 * 0.0000002 + 200 * 0.000008, rel=1e-12)


def test_agentcore_bills_cpu_only_while_computing_and_memory_throughout(prices: AwsPrices) -> None:
    # 5 steps of 20 s waiting + 0.1 s computing, 1 vCPU, 1 GB: 0.5 vCPU-seconds, 100.5 GB-seconds
    usd = costmodel.agentcore_usd(prices, 5, 20, 0.1)
    assert usd == pytest.approx(0.5 / 3600 * 0.0895 + 100.5 / 3600 * 0.00945, rel=1e-12)
    assert usd == pytest.approx(0.0002762430556, rel=1e-9)


def test_a_sonnet_step_is_priced_from_pricing_json() -> None:
    # claude-sonnet-5-5 at $2 / $10 per million: 5,000 in + 300 out
    assert costmodel.reference_step_usd() == pytest.approx(5000 * 2 / 1e6 + 300 * 10 / 1e6)
    assert costmodel.reference_step_usd() == pytest.approx(0.013)


def test_lambda_duration_is_billed_per_millisecond_rounded_up() -> None:
    assert costmodel.billed_ms(0.0101) == 11
    assert costmodel.billed_ms(0.010) == 10
    assert costmodel.cpu_scaled(0.1, 1769) == pytest.approx(0.1)
    assert costmodel.cpu_scaled(0.1, 256) == pytest.approx(0.1 * 1769 / 256)


def test_with_every_price_zero_every_figure_is_zero(prices: AwsPrices) -> None:
    # no price hides in the code: a price file of zeros prices everything at zero
    zeros = {name: price.model_copy(update={"usd": 0.0}) for name, price in prices.prices.items()}
    free = prices.model_copy(update={"prices": zeros})
    counts = Counts(transitions=9, lambdas=(LambdaUse(256, 3, 700),), rru=5, wru=20, sqs_requests=4, api_requests=1)
    assert stepwise_bill(free, counts).total == 0
    assert costmodel.naive_loop_usd(free, 1024, 5, 20) == 0
    assert costmodel.durable_usd(free, 1024, 5, 4, 20, 0.1) == 0
    assert costmodel.agentcore_usd(free, 5, 20, 0.1) == 0
    assert costmodel.waiting_usd(free, 1024, 20) == 0


def test_every_price_the_bench_names_is_in_the_file_and_no_price_is_a_literal(prices: AwsPrices) -> None:
    named: set[str] = set()
    for source in BENCH_SOURCES:
        tree = ast.parse(source.read_text())
        sleeps = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                  and isinstance(node.func, ast.Attribute) and node.func.attr == "sleep"]  # fmt: skip
        waits = {id(argument) for call in sleeps for argument in call.args}  # a poll interval is not a price
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "usd":
                (argument,) = node.args
                assert isinstance(argument, ast.Constant), f"{source.name}: usd() of a computed name"
                named.add(argument.value)
            # a price per unit is a small fraction: none may be written in the bench's code
            if isinstance(node, ast.Constant) and isinstance(node.value, float) and id(node) not in waits:
                assert not 0 < node.value < 0.1, f"{source.name}:{node.lineno}: {node.value} looks like a price"
    assert named <= set(prices.prices)
    assert {"stepfunctions_standard_transition", "lambda_arm_gb_second", "lambda_durable_operation",
            "agentcore_runtime_vcpu_hour", "agentcore_runtime_gb_hour"} <= named  # fmt: skip


def test_dynamodb_units_follow_its_size_rules() -> None:
    item = {"pk": {"S": "T#a#R#r"}, "n": {"N": "12345"}, "ok": {"BOOL": True}, "m": {"M": {"k": {"S": "vv"}}}}
    # names 2+1+2+1 = 6; values 7 + (5 digits // 2 + 1 = 3) + 1 + (3 + 1 + 2 = 6) = 17
    assert item_size(item) == 23
    assert value_size({"L": [{"S": "ab"}, {"NULL": True}]}) == 3 + 2 + 1
    assert read_units(4096) == 1 and read_units(4097) == 2 and read_units(0) == 1
    assert read_units(4096, consistent=False) == 0.5
    assert read_units(100, transactional=True) == 2
    assert write_units(1024) == 1 and write_units(1025) == 2 and write_units(10) == 1
    assert write_units(1025, transactional=True) == 4


def test_update_rewrites_only_what_stands_between_the_markers(tmp_path: Path) -> None:
    from bench.orchestration import BEGIN, END, update

    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Title\n\n{BEGIN}\nold table\n{END}\n\nMethod.\n")
    update(page, "| new | table |")
    assert page.read_text() == f"# Title\n\n{BEGIN}\n| new | table |\n{END}\n\nMethod.\n"
    page.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="needs one"):
        update(page, "x")
    assert page.read_text() == "# no markers\n"
