"""Tiller: an OpenAI-compatible gateway with gatekeeping and durable execution on Temporal."""
