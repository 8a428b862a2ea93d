"""What crosses a service boundary inside Tiller, in one place.

The gateway starts a request's run in Temporal and reads its answer from Redis; the worker runs
it and writes the answer; the router describes where each model runs; pipelines (workflow code
the worker hosts) call other models through the same activity. What they hand each other is
defined here and nowhere else:

- `names`: Temporal activity, workflow and task-queue names;
- `requests`: a request's run (`InferenceInput`) and what is asked of the engine (`Chat`,
  `TextCompletion`, `Embedding`);
- `results`: what a run returns (`InferenceResult`, `Usage`);
- `routes`: a router `Route` in the terms of a run (targets, retry policy, defaults);
- `runs`: how a run is executed by Temporal (activity options, time bounds, the failover loop
  that workflow code uses);
- `events` and `answer_stream`: the typed answer events and the Redis stream that carries them;
- `endpoint_reports`: each worker's report of its engine endpoints in Redis, which the gateway
  sums for /metrics and `tiller status`;
- `keys`: an API key's public id;
- `engines`: the engine kinds a deployment may name and what their `options:` mean.

Services import `common`, `contract` and `protos`, never each other's packages
(tests/unit/test_boundaries.py). Nothing here runs at import, and nothing opens a connection:
the router can load what it needs without the worker's engine clients.
"""
