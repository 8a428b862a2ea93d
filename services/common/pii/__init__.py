"""Personal data in requests: detection, masking policies, and restoring placeholders.

The gateway masks every text an engine will see before anything is stored or sent
(gateway/masking.py); the router checks the models.yaml policies and recognizers
(router/config.py). See docs/pii.md.
"""
