"""The CLI's exit codes.

0 done; 1 the service or a task failed (or some batch pairs failed); 2 the input was refused
before anything was sent (bad parameters, unreadable frames or manifest, no API key); 3 the budget
(``--max-cost``) left pairs unsubmitted; 130 interrupted (Ctrl-C), after cancelling the run's
tasks still queued at the service.
"""

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_OVER_BUDGET, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
