"""The pure agent core: pydantic and the standard library only (tests/unit/test_boundaries.py holds it to that).

Where things happen, one module each:

Use cases (each built once from its ports; functions/adapters/wiring.py builds them from AWS adapters,
tests/fakes/core.py from in-memory fakes):
    submit.py      POST /runs: validate, persist QUEUED, enqueue (Submitter)
    intake.py      start each run's execution once, the run watchdog, delayed releases (Intake)
    step.py        one step: guard -> route -> reserve -> call -> settle (StepRunner)
    step_loop.py   the steps one step invocation takes in a row while their calls all run in it (Steps)
    tool.py        one tool call of a step, run once, at most once with side effects; Lambda tools' results and
                   the failures the workflow caught (ToolRunner)
    lifecycle.py   how a run ends: Finalize, the workflow's Catch, outside the workflow, cancel (Lifecycle); the
                   tool calls an end leaves without a result get its error result first (settle_calls)
    agents.py      /v1/agents: versioned agent definitions, what is refused by name (Agents)
    sessions.py    /v1/sessions: runs with turns, the client's events, events read off the history (Sessions)
    webhooks.py    /v1/webhooks: tenants' endpoints (Webhooks); an ended run's or turn's event, announced from
                   lifecycle.py (WebhookNotifier), fanned out and delivered with retries (Deliveries)
    doctor.py      `stepwise doctor`: a deployment's health, each finding with its next steps (Doctor)
    census.py      active work counted off the index of active work (active.py): the ActiveRuns gauge, the doctor's row
    streams.py     live events: a stream's start, frames and end (Follower); the tickets that open one (Tickets)

Rules:
    ledger.py      budgets and accounting: every write that moves money or a run's status, as a plan the
                   stores apply (reserve, settle, end, release), and why a refused one was refused
    routing.py     which model serves a step (policies, escalation, downgrades)
    conversation.py  the Messages API conversation rebuilt from the stored run
    caching.py     prompt-cache breakpoints;  response_cache.py  the exact-match response cache's key
    circuit.py     circuit-breaker transitions;  breaker.py  applying them through the shared store
    pricing.py     prices and costs (data/pricing.json);  spend.py  the spend report
    hosts.py       which hosts an allow-list admits (the tools' egress, the webhooks' endpoints)
    results.py     large tool results: the view the model sees, the whole kept in the result store, read in pages

Shapes:
    models.py      runs, steps, tool calls, usage, RunKey / StepRef, turns;  errors.py  every error, one module
    requests.py    a request body parsed into a model, with a 400 message naming each problem
    ports.py       what the core needs from outside (stores, model client, queue, workflow, toolbox, MCP, results)
"""
