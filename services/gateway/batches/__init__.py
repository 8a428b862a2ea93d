"""OpenAI's Batch API on Temporal: `/v1/batches` (api.py), each batch one workflow
(workflow.py) whose lines run as live requests at the lowest priority (activities.py), its
object in Redis (store.py), its input and output files in the file store."""
