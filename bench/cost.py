"""Cost benchmark: one scripted 20-step agent run, priced without and with automatic prompt caching.

The run goes through the real core loop (``execute_step`` + ``execute_tool`` on the in-memory store) and the
real ``AnthropicModel`` adapter and anthropic SDK, against the scripted fake Messages API on 127.0.0.1 with its
prompt-cache simulator, so the usage of every step (input, cache writes by TTL, cache reads) is reported the
way the real API reports it for repeated prefixes. The prompt opens with a ~4,000-token prefix: a long system
prompt and nine tool schemas. Each step the scripted model asks for one calculator call; step 20 answers.
Token counts are estimates (JSON characters / 4); prices come from ``functions/agent/data/pricing.json``.

Usage (from the project root): python bench/cost.py [--steps 20] [--ttl 5m|1h] [--caching wrapper|built-in]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/cost.py` puts bench/ first on the path, not the project
    sys.path.insert(0, str(ROOT))

import anthropic  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from functions.adapters.anthropic_model import AnthropicModel  # noqa: E402
from functions.agent.caching import CacheTTL, place_cache_breakpoints  # noqa: E402
from functions.agent.models import Budget, ModelRequest, ModelResponse, RunRequest, RunStatus, StepRef, Usage  # noqa: E402
from functions.agent.ports import ModelClient  # noqa: E402
from functions.agent.pricing import ModelPrice, default_price_book  # noqa: E402
from functions.tools.builtins import CalculatorInput, calculator  # noqa: E402
from functions.tools.registry import Tool, ToolRegistry  # noqa: E402
from tests.fakes import core  # noqa: E402
from tests.fakes.anthropic_server import FakeAnthropic, PromptCacheSimulator, estimate_tokens, message  # noqa: E402
from tests.fakes.clock import FixedClock  # noqa: E402
from tests.fakes.memory_store import InMemoryRunStore  # noqa: E402

MODEL = "claude-sonnet-5-5"
TENANT = "bench"
MIN_CACHEABLE_TOKENS = 1024  # Sonnet's minimum cacheable prefix
# Haiku 4.5 needs a longer prefix before anything is cached (as documented for prompt caching; verify there)
MIN_CACHEABLE_BY_MODEL = {"claude-haiku-4-5": 4096, "claude-opus-4-5": 4096}
POLICY = "balanced"  # functions/agent/data/routing.json
GOAL_RATIO = Decimal("0.3")
_PER_TOKEN = Decimal(1_000_000)

# How caching is switched on. "wrapper": the bench wraps the model client and places the breakpoints itself.
# "built-in": the StepRunner places them, as the step Lambda does (STEPWISE_PROMPT_CACHE_TTL, default 5m).
CachingMode = Literal["wrapper", "built-in"]
CACHING_MODE: CachingMode = "built-in"

# ---------------------------------------------------------------------------------------- the agent's prefix

SYSTEM_PROMPT = """\
You are Ledger, the finance-operations agent of Northwind Supply. You work through tools: you never guess a
figure you can compute or look up, and you never claim to have done something a tool did not confirm.

## Who you work for
Your users are accountants, controllers and operations staff of Northwind Supply and its three subsidiaries
(Northwind Retail GmbH, Northwind Logistics BV and Northwind Supply Inc.). They ask you to reconcile
accounts, explain variances, prepare figures for month-end close, chase missing documents and draft
messages to suppliers and customers. They are busy professionals: answer precisely, show the figures that
matter and say what you did not check.

## How to work
1. Restate the task to yourself in one sentence and decide which figures you need.
2. Look up facts (orders, invoices, policies, exchange rates) with the tools before you reason about them.
   The knowledge base holds the accounting manual, the close calendar and the approval matrix; prefer it to
   your own memory of accounting rules, because Northwind's policies differ from textbook practice.
3. Do every piece of arithmetic with the calculator tool, one expression per call, even when it looks
   trivial. Money is rounded half-up to two decimals only at the end of a chain of calculations; keep full
   precision in between. State the currency of every amount.
4. When figures in two sources disagree, report both with their source and the difference; never silently
   pick one.
5. Finish with a short answer: the result first, then the two or three facts it rests on, then anything the
   user must decide or check. Use a table when you compare more than three figures.

## Money, currencies and dates
- The group reports in EUR. Northwind Supply Inc. books in USD, the others in EUR. Convert with the ECB
  reference rate of the booking date (convert_currency with rate_date), not today's rate, unless the user
  asks for a current valuation.
- Dates are ISO 8601. The fiscal year is the calendar year; month-end close runs on the first five working
  days of the next month (Frankfurt holiday calendar).
- Amounts in tool results are strings with a decimal point; never parse thousands separators.
- VAT: Germany 19 % (7 % reduced), Netherlands 21 % (9 % reduced). US sales tax is never reclaimable.

## Approvals and limits
- You may read everything the tools return. You may create support tickets and draft emails without
  approval. Sending an email to an address outside northwind-supply.example requires the user's explicit
  confirmation in this conversation, quoted in your final answer.
- You never post journal entries, release payments or change master data. If a task needs one of these,
  prepare the figures and say who must approve it according to the approval matrix: up to EUR 10,000 the
  team lead, up to EUR 100,000 the controller, above that the CFO.
- Never include bank account numbers, tax ids or personal data of employees in a ticket or an email.

## Reconciliation rules
- A supplier invoice matches an order when supplier, order number and currency agree and the net amount is
  within 0.5 % or EUR 5.00 of the order value, whichever is smaller. Partial deliveries match per delivery
  note.
- Credit notes reduce the open amount of the invoice they reference; an unreferenced credit note is an open
  item of its own and must be reported.
- Intercompany balances must net to zero in EUR at the group reference rate; report any difference above
  EUR 1.00 with both sides' bookings.
- Accruals are booked for goods received but not invoiced at month end, valued at the order price.

## Month-end close: what you are asked for, and when
- Working day 1: accruals for goods received not invoiced (query_orders with status partially_delivered or
  delivered, no linked invoice). Value them at the order price in the booking currency, then in EUR.
- Working day 2: supplier invoice reconciliation (the rules above) and the list of open differences per
  supplier, largest first. Differences below EUR 5.00 per invoice are listed but need no ticket.
- Working day 3: intercompany confirmation between the three companies, per counterparty and currency.
- Working day 4: bank and cash (treasury owns it; you only compare ledger_balance with the figures the user
  gives you) and the VAT pre-check per entity.
- Working day 5: variance commentary for the controller: every P&L line that moved more than 10 % and more
  than EUR 20,000 against the previous month or the budget needs one sentence of explanation, backed by the
  orders, invoices or bookings that explain it.
When the user names a working day, do that day's work; when a task spans days, say which parts belong to
which day and whether an earlier day's result is missing.

## Terms as Northwind uses them
- "Open item": a booked invoice, credit note or payment not yet matched against its counterpart.
- "Tolerance": the matching tolerance of the reconciliation rules, never a rounding difference.
- "GRNI": goods received, not invoiced; the basis of the month-end accrual.
- "IC": intercompany, a booking between two Northwind companies; always has a mirror booking.
- "Reference rate": the ECB euro foreign exchange reference rate of a date, published around 16:00 CET.
- "Booking date" and "document date" differ: use the booking date for periods and exchange rates, the
  document date for payment terms and dunning.
- "Gross" includes VAT, "net" excludes it; supplier statements are gross, orders are net.
- "Dunning level": 1 to 3, how many reminders a customer has had; level 3 goes to collections and is no
  longer yours to chase.
- "Three-way match": order, delivery note and invoice agree; required for every invoice above EUR 1,000.
- "Cut-off": a delivery belongs to the month in which the goods arrived, whatever the invoice date says.

## Style
- Write in the user's language (German, Dutch or English). Keep answers under 250 words unless the user asks
  for a full report.
- Name the tool results you relied on ("order 4711 from query_orders") so the user can check them.
- If a tool fails, say so and continue with what you can do; retry a failed call at most once.
- If the task is ambiguous, ask one clarifying question instead of guessing, unless a reasonable default is
  stated in the accounting manual.

## Examples of good final answers
"Invoice 88-1042 from Brandt Metallbau matches order 4711 (EUR 12,480.00 net; invoice EUR 12,480.00 net,
19 % VAT EUR 2,371.20). Ready for payment approval by the controller (above EUR 10,000). Not checked: the
delivery note, which is not in the system yet."

"The intercompany difference between Northwind Retail GmbH and Northwind Supply Inc. for March is
EUR 314.27: Retail booked invoice IC-0331 at 1.0812 USD/EUR (booking date), Supply Inc. at 1.0790 (payment
date). Per the manual (section 7.2) the booking-date rate is correct; Supply Inc. should rebook. I opened
ticket FIN-2291 for the Supply Inc. accounting team."
"""


class SearchKnowledgeBaseInput(BaseModel):
    query: str = Field(
        min_length=2,
        max_length=500,
        description="What to look for, in plain words: a policy, a procedure, a defined term or a deadline. "
        "Use the words the accounting manual would use, e.g. 'accrual for goods received not invoiced'.",
    )
    section: Literal["accounting_manual", "close_calendar", "approval_matrix", "any"] = Field(
        default="any", description="Restrict the search to one part of the knowledge base."
    )
    max_results: int = Field(default=5, ge=1, le=20, description="How many passages to return, best first.")


class ReadDocumentInput(BaseModel):
    document_id: str = Field(
        pattern=r"^[A-Z]{2,5}-[0-9A-Z-]{2,20}$",
        description="Id of an invoice, credit note, delivery note, contract or manual section, as returned by "
        "another tool, e.g. 'INV-88-1042', 'CN-2024-0031', 'DN-4711-2' or 'MAN-7.2'.",
    )
    pages: str | None = Field(
        default=None,
        description="Page range to read, e.g. '1-3'. Omit to read the whole document (at most 20 pages).",
    )
    include_line_items: bool = Field(
        default=True, description="Return the line items of invoices and delivery notes as a table."
    )


class QueryOrdersInput(BaseModel):
    entity: Literal["NW-RETAIL-DE", "NW-LOGISTICS-NL", "NW-SUPPLY-US"] = Field(
        description="The company whose purchase or sales orders to search."
    )
    kind: Literal["purchase", "sales"] = Field(description="Purchase orders (suppliers) or sales orders.")
    order_number: str | None = Field(default=None, description="An exact order number, e.g. '4711'.")
    counterparty: str | None = Field(
        default=None, description="Supplier or customer name or id; a prefix match, case-insensitive."
    )
    date_from: str | None = Field(default=None, description="Earliest order date, ISO 8601 (YYYY-MM-DD).")
    date_to: str | None = Field(default=None, description="Latest order date, ISO 8601 (YYYY-MM-DD).")
    status: list[Literal["open", "partially_delivered", "delivered", "invoiced", "closed", "cancelled"]] = Field(
        default_factory=list, description="Only orders in one of these statuses; empty means any status."
    )
    limit: int = Field(default=25, ge=1, le=200, description="Maximum number of orders to return.")


class LedgerBalanceInput(BaseModel):
    entity: Literal["NW-RETAIL-DE", "NW-LOGISTICS-NL", "NW-SUPPLY-US"] = Field(description="The company.")
    account: str = Field(
        pattern=r"^[0-9]{4,6}$", description="General-ledger account number of the entity's chart of accounts."
    )
    period: str = Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="Fiscal period as YYYY-MM.")
    include_open_items: bool = Field(
        default=False, description="Also list the open items that make up the balance (at most 100)."
    )
    currency: Literal["booking", "EUR"] = Field(
        default="booking", description="Report in the entity's booking currency or converted to EUR."
    )


class ConvertCurrencyInput(BaseModel):
    amount: str = Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", description="The amount, as a decimal string.")
    from_currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code of the amount's currency.")
    to_currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code to convert to.")
    rate_date: str | None = Field(
        default=None,
        description="Use the ECB reference rate of this date (YYYY-MM-DD); the last rate published on or "
        "before it. Omit for the latest rate.",
    )


class CreateTicketInput(BaseModel):
    team: Literal["accounts_payable", "accounts_receivable", "treasury", "tax", "controlling", "it_finance"] = Field(
        description="The team that must act on the ticket."
    )
    title: str = Field(min_length=5, max_length=120, description="One line: what must be done, and for what.")
    description: str = Field(
        min_length=20,
        max_length=4000,
        description="The facts the team needs: documents, amounts with currency, what you checked and what is "
        "missing. No bank details, tax ids or personal data.",
    )
    priority: Literal["low", "normal", "high", "blocking_close"] = Field(
        default="normal", description="Use blocking_close only when month-end close cannot finish without it."
    )
    due_date: str | None = Field(default=None, description="When it must be done, YYYY-MM-DD.")
    related_documents: list[str] = Field(default_factory=list, description="Ids of the documents concerned.")


class DraftEmailInput(BaseModel):
    to: list[str] = Field(min_length=1, max_length=10, description="Recipient email addresses.")
    cc: list[str] = Field(default_factory=list, max_length=10, description="Copy recipients.")
    subject: str = Field(min_length=3, max_length=150, description="The subject line.")
    body: str = Field(
        min_length=20,
        max_length=8000,
        description="Plain-text body in the recipient's language, signed 'Northwind Supply - Finance'.",
    )
    send: bool = Field(
        default=False,
        description="Send immediately instead of saving a draft. Outside northwind-supply.example only with "
        "the user's explicit confirmation in this conversation.",
    )


class SupplierStatementInput(BaseModel):
    supplier: str = Field(min_length=2, description="Supplier name or id, as in query_orders results.")
    entity: Literal["NW-RETAIL-DE", "NW-LOGISTICS-NL", "NW-SUPPLY-US"] = Field(
        description="The Northwind company the statement is addressed to."
    )
    as_of: str = Field(description="Statement date, YYYY-MM-DD; the latest statement on or before it is returned.")
    compare_with_ledger: bool = Field(
        default=True,
        description="Also match every statement line against the entity's open items and return the lines "
        "that are only on the statement, only in the ledger, or on both with different amounts.",
    )


def _never_called(arguments: BaseModel) -> str:  # the scripted model only asks for the calculator
    return f"{type(arguments).__name__}: not available in the benchmark"


def bench_registry() -> ToolRegistry:
    described: list[tuple[str, str, type[BaseModel]]] = [
        ("search_knowledge_base", "Search Northwind's accounting manual, close calendar and approval matrix. "
         "Returns the best-matching passages with their section ids.", SearchKnowledgeBaseInput),
        ("read_document", "Read an invoice, credit note, delivery note, contract or manual section by id. "
         "Returns its header fields, text and, for invoices and delivery notes, line items.", ReadDocumentInput),
        ("query_orders", "Search purchase or sales orders of one Northwind company. Returns order number, "
         "counterparty, dates, currency, net and gross amounts, status and linked invoices.", QueryOrdersInput),
        ("ledger_balance", "The balance of a general-ledger account for a fiscal period, optionally with the "
         "open items that make it up.", LedgerBalanceInput),
        ("convert_currency", "Convert an amount between currencies at the ECB reference rate of a date. Returns "
         "the converted amount at full precision and the rate used.", ConvertCurrencyInput),
        ("supplier_statement", "A supplier's account statement (gross amounts) as received by accounts "
         "payable, optionally matched against the ledger's open items.", SupplierStatementInput),
        ("create_ticket", "Open a ticket for a finance team. Returns the ticket id (e.g. FIN-2291).",
         CreateTicketInput),
        ("draft_email", "Draft (or, with confirmation, send) an email from the finance mailbox. Returns the "
         "draft id or the sent message id.", DraftEmailInput),
    ]  # fmt: skip
    tools = [
        Tool(
            name="calculator",
            description="Evaluate an arithmetic expression exactly and return the number. Use it for every "
            "calculation: sums, differences, VAT, percentages, currency arithmetic.",
            input_model=CalculatorInput,
            fn=calculator,
        )
    ]
    tools += [Tool(name=name, description=text, input_model=model, fn=_never_called) for name, text, model in described]
    return ToolRegistry(tools)


# -------------------------------------------------------------------------------------- the scripted model

TASK = (
    "Reconcile the March supplier invoices of Northwind Retail GmbH against their purchase orders and give me "
    "the total open difference in EUR, line by line."
)


def scripted_reply(body: dict[str, Any], steps: int) -> dict[str, Any]:
    """The reply to a request: the next calculator call, or the final answer once ``steps - 1`` tool results are
    in the conversation. Decided from the request, so a step taken again (routing escalation) gets the same."""
    step = sum(
        1
        for message_ in body["messages"]
        if isinstance(message_["content"], list) and any(b.get("type") == "tool_result" for b in message_["content"])
    )
    if step >= steps - 1:
        content: list[dict[str, Any]] = [
            {
                "type": "text",
                "text": "All 19 March invoices of Northwind Retail GmbH are reconciled against their purchase "
                "orders. The open difference is EUR 1,284.37 in total: 14 invoices match within tolerance, "
                "3 differ by freight surcharges not on the order (EUR 912.40), 2 by unit prices "
                "(EUR 371.97). Each figure comes from the calculator results above.",
            }
        ]
        stop_reason = "end_turn"
    else:
        expression = f"({1000 + 137 * step} * 1.19) - {1180 + 151 * step}.{step:02d}"
        content = [
            {"type": "text", "text": f"Invoice {step + 1} of 19: net times VAT minus the order's gross value."},
            {"type": "tool_use", "id": f"toolu_{step:02d}", "name": "calculator", "input": {"expression": expression}},
        ]
        stop_reason = "tool_use"
    output_tokens = sum(estimate_tokens(block) for block in content)
    return message(content, stop_reason, model=body["model"], output_tokens=output_tokens)


# ------------------------------------------------------------------------------------------ caching switch


class CachingModel:
    """A ModelClient that places prompt-cache breakpoints on every request before delegating."""

    def __init__(self, inner: ModelClient, ttl: CacheTTL) -> None:
        self.inner = inner
        self.ttl: CacheTTL = ttl
        self.provider = inner.provider

    def create(self, request: ModelRequest) -> ModelResponse:
        return self.inner.create(place_cache_breakpoints(request, ttl=self.ttl))


def built_in_caching_kwargs(ttl: CacheTTL) -> dict[str, Any]:
    """The StepConfig that switches on its own caching (as the step Lambda does by default)."""
    return {"prompt_cache_ttl": ttl}


# ------------------------------------------------------------------------------------------------ the run


@dataclass
class Result:
    name: str
    usage: Usage
    recorded_cost: Decimal
    steps: int
    input_side: Decimal  # input + cache write + cache read, each step priced at the model that served it
    output: Decimal
    models: str


def run_once(
    name: str, *, steps: int, caching: bool, mode: CachingMode, ttl: CacheTTL, model_name: str = MODEL
) -> Result:
    registry = bench_registry()
    prices = default_price_book()
    store = InMemoryRunStore()
    clock = FixedClock()
    script = [lambda body: (200, scripted_reply(body, steps))] * (2 * steps)  # escalations take extra calls
    with FakeAnthropic(
        *script, cache=PromptCacheSimulator(min_tokens=MIN_CACHEABLE_TOKENS, min_tokens_by_model=MIN_CACHEABLE_BY_MODEL)
    ) as fake:
        model: ModelClient = AnthropicModel(anthropic.Anthropic(api_key="bench", base_url=fake.base_url, max_retries=0))
        extra: dict[str, Any] = {}
        if caching and mode == "wrapper":
            model = CachingModel(model, ttl)
        elif caching:
            extra = built_in_caching_kwargs(ttl)
        submitter = core.submitter(
            store, toolbox=registry, prices=prices, clock=clock, new_id=lambda: f"run_bench_{name}", default_model=MODEL
        )
        request = RunRequest(input=TASK, model=model_name, budget=Budget(max_steps=2 * steps), max_tokens_per_call=1024)
        key = submitter.submit(TENANT, request).run.key
        runner = core.runner(store, model, toolbox=registry, prices=prices, clock=clock, system=SYSTEM_PROMPT, **extra)
        for step in range(2 * steps):
            outcome = runner.run(StepRef(key, step))
            for result in core.run_tools(store, outcome, registry):
                assert not result.is_error, result.content
            if outcome.status is not None:  # what the Finalize state does
                core.lifecycle(store, clock=clock).end(key, outcome.status, outcome.error)
                break
    run = store.get_run(key)
    assert run is not None
    if run.status is not RunStatus.SUCCEEDED or run.completed_steps < steps:
        raise SystemExit(f"{name}: run ended {run.status.value} after {run.completed_steps} steps: {run.error}")
    records = store.load_history(key).steps
    side = sum((input_side_cost(r.usage, prices.price(r.requested_model or MODEL)) for r in records), Decimal(0))
    out = sum((output_cost(r.usage, prices.price(r.requested_model or MODEL)) for r in records), Decimal(0))
    served = sorted({r.requested_model or MODEL for r in records})
    mix = ", ".join(f"{m} x{sum(1 for r in records if (r.requested_model or MODEL) == m)}" for m in served)
    return Result(name, run.usage, run.cost_usd, run.completed_steps, side, out, mix)


def input_side_cost(usage: Usage, price: ModelPrice) -> Decimal:
    cache_1h = min(usage.cache_creation_1h_input_tokens, usage.cache_creation_input_tokens)
    cache_5m = usage.cache_creation_input_tokens - cache_1h
    micro = (
        usage.input_tokens * price.input
        + cache_5m * price.cache_write_5m
        + cache_1h * price.cache_write_1h
        + usage.cache_read_input_tokens * price.cache_read
    )
    return micro / _PER_TOKEN


def output_cost(usage: Usage, price: ModelPrice) -> Decimal:
    return usage.output_tokens * price.output / _PER_TOKEN


def prefix_tokens() -> int:
    tools = bench_registry().schemas(bench_registry().names)
    return sum(estimate_tokens(block) for block in [*tools, {"type": "text", "text": SYSTEM_PROMPT}])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="model calls in the run (the last one answers)")
    parser.add_argument("--ttl", choices=["5m", "1h"], default="5m", help="cache TTL of the breakpoints")
    parser.add_argument("--caching", choices=["wrapper", "built-in"], default=CACHING_MODE, help="how caching is on")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="anthropic")

    if args.caching == "built-in":
        built_in_caching_kwargs(args.ttl)  # fails before anything runs while it is not wired

    def kw(caching: bool) -> dict[str, Any]:
        return {"steps": args.steps, "caching": caching, "mode": args.caching, "ttl": args.ttl}

    results = [
        run_once("uncached", **kw(False)),
        run_once(f"cached-{args.ttl}", **kw(True)),
        run_once("routed", model_name=POLICY, **kw(False)),
        run_once(f"routed+{args.ttl}", model_name=POLICY, **kw(True)),
    ]
    print(
        f"{args.steps}-step run, model {MODEL} (routing policy {POLICY!r}: strong plans and answers, cheap digests), "
        f"tools+system prefix ~{prefix_tokens():,} tokens (estimated), prices {default_price_book().version}, "
        f"caching via {args.caching}"
    )
    header = f"{'run':<12} {'calls':>5} {'input tok':>10} {'cache write':>11} {'cache read':>10} {'input-side $':>13} "
    header += f"{'output $':>10} {'total $':>10}  models"
    print(header)
    print("-" * len(header))
    for result in results:
        usage = result.usage
        assert abs((result.input_side + result.output) - result.recorded_cost) < Decimal("0.000001"), "bench != core"
        print(
            f"{result.name:<12} {result.steps:>5} {usage.input_tokens:>10,} {usage.cache_creation_input_tokens:>11,} "
            f"{usage.cache_read_input_tokens:>10,} {result.input_side:>13.6f} {result.output:>10.6f} "
            f"{result.recorded_cost:>10.6f}  {result.models}"
        )
    uncached, cached, routed, routed_cached = results
    ratio = cached.input_side / uncached.input_side
    verdict = "meets" if ratio <= GOAL_RATIO else "MISSES"
    print(f"input-side cost cached/uncached: {ratio:.3f} ({verdict} the goal of <= {GOAL_RATIO})")
    print(f"total cost routed/unrouted, no caching: {routed.recorded_cost / uncached.recorded_cost:.3f}")
    print(f"total cost routed/unrouted, both cached: {routed_cached.recorded_cost / cached.recorded_cost:.3f}")
    print(f"total cost routed+cached / plain: {routed_cached.recorded_cost / uncached.recorded_cost:.3f}")


if __name__ == "__main__":
    main()
