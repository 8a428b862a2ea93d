"""Names both sides of Temporal must agree on: activities, workflows and task queues."""

from __future__ import annotations

# Each request is one standalone activity on its deployment's task queue (the fast path), or,
# with more than one deployment to try, the failover workflow, which runs the same activity on
# each in turn.
GENERATE_ACTIVITY = "tiller.generate"
FAILOVER_WORKFLOW = "tiller.failover"
# Every worker polls this queue for failover workflows (they only start activities).
FAILOVER_TASK_QUEUE = "tiller.failover"
# Every worker polls this queue for pipeline workflows (services/pipelines/) and their own
# small activities: resolving a step's model, publishing a fixed answer or a step's error.
PIPELINE_TASK_QUEUE = "tiller.pipelines"
ROUTE_ACTIVITY = "tiller.pipeline.route"
PUBLISH_ACTIVITY = "tiller.pipeline.publish"


def pipeline_workflow(name: str) -> str:
    """The workflow type a pipeline (models.yaml `pipeline.workflow`) is registered under."""
    return f"tiller.pipeline.{name}"
