"""Priority classes, as Temporal orders the tasks waiting in a queue: 1 is dispatched first.

A key carries one (quota); a caller may put a request in a later class, never an earlier one.
"""

HIGHEST_PRIORITY, DEFAULT_PRIORITY, LOWEST_PRIORITY = 1, 3, 5
