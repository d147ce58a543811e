"""Flows: chains, groups, chords and DAGs of ordinary tasks whose joins cannot hang (docs/flows.md).

A flow's bookkeeping is one Redis hash in its queue's hash tag (lua/dag_step.lua documents its fields). A member's
envelope names its flow and node (`flow_member`, a field only this machinery writes); the settle script that records
a member's final outcome makes ready, in the same call, every join that outcome completes (lua/dag_settle.lua). The
word "flow" for per-host flow *control* (core/flow.py, `flow_slot`) is a different thing: key names here say `dag`.

- members.py: the envelope field `flow_member` and the names of flows and nodes (pure).
- spec.py: a flow definition (nodes, dependencies, policies) checked and turned into what Redis stores (pure).
- store.py: creating, reading, cancelling and listing flows in Redis.
- reconcile.py: the periodic reconciliation and the flow events.
- inputs.py: a member's parents' outcomes, read when it runs.
"""
